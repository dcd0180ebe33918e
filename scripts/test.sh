#!/usr/bin/env bash
# The whole Custos test suite, runnable on a fresh machine:
#   Rust unit and integration tests (SQLite, a real PostgreSQL, SoftHSM2 for PKCS#11, swtpm
#   TPMs judged by tpm2-tools), then
#   the interop suites that judge compatibility with clients we did not write (hvac, PyJWT,
#   schemathesis, securesystemslib/in-toto).
set -euo pipefail
cd "$(dirname "$0")/.."

CUSTOS_TEST_PG_URL=$(scripts/pg-for-tests.sh)
export CUSTOS_TEST_PG_URL

scripts/deps.sh

echo "==> cargo test (workspace, SQLite + PostgreSQL)"
# The `tpm` feature builds `custos agent`'s [attest] block (tss-esapi), which its tests need.
cargo build --locked --workspace --all-targets --features custos-cli/tpm
cargo test --locked --workspace --features custos-cli/tpm

# README check: every shell block of README.md, in order, against a dev server and a
# configured one. A README with one command broken must fail it (the check checks itself).
echo "==> README check"
scripts/readme-check.sh README.md target/debug/custos
broken=$(mktemp /tmp/README.broken.XXXXXX.md)
sed '0,/^custos read secret\/amf$/s//custos read secret\/does-not-exist/' README.md > "$broken"
if ! grep -q 'custos read secret/does-not-exist' "$broken"; then
  echo "README check self-test: the line it breaks is gone from README.md" >&2; exit 1
fi
if scripts/readme-check.sh "$broken" target/debug/custos >/dev/null 2>&1; then
  echo "README check self-test: a README with a failing command passed" >&2; exit 1
fi
rm -f "$broken"
echo "README check self-test: a broken command fails it"

# Fuzzing: the corpus replay above (crates/fuzz-targets) runs on stable; with a nightly
# toolchain and cargo-fuzz present, each target also runs for a bounded time. A crash fails
# the run; a nightly that cannot build the targets is reported and skipped.
if rustup toolchain list 2>/dev/null | grep -q '^nightly' && cargo +nightly fuzz --help >/dev/null 2>&1; then
  if (cd fuzz && cargo +nightly fuzz build -O >/dev/null 2>&1); then
    echo "==> fuzz: every target for ${FUZZ_SECONDS:-20} s (nightly, cargo-fuzz)"
    (cd fuzz && for t in $(cargo +nightly fuzz list); do
      mkdir -p "target/corpus-$t" && cp -r "corpus/$t/." "target/corpus-$t/"
      cargo +nightly fuzz run -O "$t" "target/corpus-$t" -- \
        -max_total_time="${FUZZ_SECONDS:-20}" -rss_limit_mb=2048 -print_final_stats=0 2>&1 | tail -n 3
      test "${PIPESTATUS[0]}" -eq 0
    done)
  else
    echo "==> fuzz: skipped (the nightly toolchain here cannot build the targets)"
  fi
else
  echo "==> fuzz: skipped (no nightly toolchain with cargo-fuzz here); the stable corpus replay ran with the Rust tests"
fi

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
