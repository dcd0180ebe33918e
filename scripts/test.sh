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

# Debian packages: SoftHSM2 (the PKCS#11 token the firmware-signing tests keep their HSM key
# in); swtpm and tpm2-tools (the software TPMs and the tools that judge the attestation
# verifier); jq, curl and openssl (README's walkthrough, which the README check runs).
need=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v swtpm >/dev/null || need+=(swtpm)
command -v swtpm_setup >/dev/null || need+=(swtpm-tools)
command -v tpm2_quote >/dev/null || need+=(tpm2-tools)
for c in jq curl openssl; do command -v "$c" >/dev/null || need+=("$c"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || {
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  }
fi

echo "==> cargo test (workspace, SQLite + PostgreSQL)"
cargo build --locked --workspace --all-targets
cargo test --locked --workspace

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
