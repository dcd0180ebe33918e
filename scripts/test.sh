#!/usr/bin/env bash
# The whole Custos test suite, runnable on a fresh machine:
#   Rust unit and integration tests (SQLite and a real PostgreSQL), then the interop suites
#   that judge compatibility with clients we did not write (hvac).
set -euo pipefail
cd "$(dirname "$0")/.."

CUSTOS_TEST_PG_URL=$(scripts/pg-for-tests.sh)
export CUSTOS_TEST_PG_URL

echo "==> cargo test (workspace, SQLite + PostgreSQL)"
cargo build --locked --workspace --all-targets
cargo test --locked --workspace

echo "==> interop: hvac, PyJWT and schemathesis against custos server"
VENV=target/interop-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3-venv
    python3 -m venv "$VENV"
  }
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
CUSTOS_BIN="$(pwd)/target/debug/custos" "$VENV/bin/python" -m pytest -q tests/interop
