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

# etcd for docker-compose.ha.yml (standby cluster managers): this machine's
# Debian etcd with the only two files it links (libc and the loader), in a
# FROM-scratch image, since no registry can be pulled from.
ETCD_IMAGE=${CONCLAVE_ETCD_IMAGE:-conclave-etcd:local}
if ETCD_BIN=$(command -v etcd); then
    ETCD_CONTEXT=target/docker-etcd-context
    rm -rf "$ETCD_CONTEXT"
    mkdir -p "$ETCD_CONTEXT/root/usr/bin"
    cp "$ETCD_BIN" "$ETCD_CONTEXT/root/usr/bin/etcd"
    # every library ldd names, at the same path
    for lib in $(ldd "$ETCD_BIN" | grep -o '/[^ ]*'); do
        mkdir -p "$ETCD_CONTEXT/root$(dirname "$lib")"
        cp -L "$lib" "$ETCD_CONTEXT/root$lib"
    done
    printf 'FROM scratch\nCOPY root/ /\nENTRYPOINT ["/usr/bin/etcd"]\n' > "$ETCD_CONTEXT/Dockerfile"
    echo "== docker build -t $ETCD_IMAGE (from $ETCD_BIN)"
    DOCKER_BUILDKIT=0 docker build -q -t "$ETCD_IMAGE" "$ETCD_CONTEXT"
else
    echo "no etcd on this machine (apt-get install etcd-server): $ETCD_IMAGE not built, docker-compose.ha.yml cannot run"
fi
