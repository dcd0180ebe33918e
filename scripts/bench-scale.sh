#!/usr/bin/env bash
# `custos bench --scale` at a size chosen on the command line (default 10,000,000
# certificates, 100,000 revoked): a bench, not CI. Prints an estimate of the run time and the
# disk it needs before starting; the bench itself prints a measured estimate after its first
# 1% of issuance. Run from the repository root; builds the release binary.
#
#   scripts/bench-scale.sh [CERTS] [REVOKE] [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
CERTS=${1:-10000000}
REVOKE=${2:-100000}
DIR=${3:-$(pwd)/target/bench-scale}
mkdir -p "$DIR"
# Planning figures from earlier runs on a 2-core machine: about 3,000 issues/s and
# 4,000 revocations/s, about 2.3 KiB of database per certificate (row, indexes, log entry,
# tiles). The bench prints the measured rate once it has one.
awk -v c="$CERTS" -v r="$REVOKE" 'BEGIN {
  s = c / 3000 + r / 4000 + 60;
  printf "estimate before starting: about %.0f min (%.1f h) for %d certificates and %d revocations; about %.1f GiB of disk\n",
    s / 60, s / 3600, c, r, c * 2.3 / 1048576 }'
FREE_KIB=$(df -Pk "$DIR" | awk 'NR == 2 {print $4}')
NEED_KIB=$(awk -v c="$CERTS" 'BEGIN {printf "%.0f", c * 2.3 * 1.5}')
if [ "$FREE_KIB" -lt "$NEED_KIB" ]; then
  echo "not enough free disk in $DIR: ${FREE_KIB} KiB free, about ${NEED_KIB} KiB needed" >&2
  exit 1
fi
cargo build -q --release --locked --bin custos
exec target/release/custos bench --scale --certs "$CERTS" --revoke "$REVOKE" --dir "$DIR"
