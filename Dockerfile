# One image with every Conclave binary, for machines that can pull images:
# `docker compose up --build`. Machines without a registry build the same
# image from locally built static binaries: scripts/docker-build.sh.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN RUSTFLAGS='-C target-feature=+crt-static' cargo build --release \
        --target x86_64-unknown-linux-gnu --workspace --bins \
    && mkdir /out \
    && for b in cluster-manager management conference-agent conference portal conclave-sample conclave-certs; do \
         strip -o /out/$b target/x86_64-unknown-linux-gnu/release/$b; \
       done

FROM scratch
COPY --from=build /out/ /usr/local/bin/
ENV PATH=/usr/local/bin
WORKDIR /data
