#!/usr/bin/env bash
# Run the whole stack locally without Docker: build the services, then start
# them as processes with the embedded store and the development key. Ctrl-C
# stops everything. Arguments go to conclave-stack (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
exec target/release/conclave-stack "$@"
