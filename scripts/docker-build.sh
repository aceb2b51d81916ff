#!/usr/bin/env bash
# Build the `conclave:local` image without pulling anything: compile fully
# static binaries here, stage them into a small build context, and build a
# FROM-scratch image with the legacy builder. Then `docker compose up` uses it.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
IMAGE=${CONCLAVE_IMAGE:-conclave:local}

echo "== static release build ($TARGET)"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target "$TARGET" --workspace --bins

CONTEXT=target/docker-context
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/bin"
for b in cluster-manager management conference-agent conference portal conclave-sample conclave-certs; do
    strip -o "$CONTEXT/bin/$b" "target/$TARGET/release/$b" 2>/dev/null \
        || cp "target/$TARGET/release/$b" "$CONTEXT/bin/$b"
done
cp docker/Dockerfile.prebuilt "$CONTEXT/Dockerfile"

echo "== docker build -t $IMAGE"
# The legacy builder needs no buildx plugin and pulls nothing for FROM scratch.
DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$CONTEXT"
