#!/usr/bin/env bash
# Run the benchmarks: build everything in release mode, then start the local
# stack and the bare baseline server and run every scenario (under a minute
# on a 2-core machine). Arguments go to conclave-loadgen (--help lists them);
# the JSON report goes to bench.json unless --json says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
exec target/release/conclave-loadgen "$@"
