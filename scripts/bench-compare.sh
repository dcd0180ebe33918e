#!/usr/bin/env bash
# Before/after benchmarks of two custos binaries in the same run, alternating A B A B so
# that both see the same machine: the HTTP API (issue, sign, tokens, logins, KV), NRF access
# tokens over mutual TLS, durable transparency-log appends, and PKI issue/sign under wrk.
# The machine's limits come from the same run: `openssl speed ecdsap256`, the fsync probe
# and the `sys/health` ceiling that `custos bench` prints.
# Usage: scripts/bench-compare.sh BEFORE_BIN AFTER_BIN [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS=${3:-2}; DUR=${4:-5}
OPS=health,token-create,lookup-self,kv-write,kv-read,pki-issue,pki-sign,login-approle,login-jwt
openssl speed -seconds 2 ecdsap256 2>/dev/null | tail -1 | sed 's/^/openssl speed (1 core): /'
for r in $(seq 1 "$ROUNDS"); do
  for side in before after; do
    BIN=$A; [ "$side" = after ] && BIN=$B
    echo "===== round $r: $side ($BIN)"
    echo "--- bench (in-process server, 32 clients)"
    "$BIN" bench --ops "$OPS" --duration "$DUR"
    echo "--- bench --nrf"
    "$BIN" bench --nrf --duration "$DUR" --profiles 1000
    echo "--- bench --tlog --clients 1024"
    "$BIN" bench --tlog --clients 1024 --duration "$DUR"
    echo "--- wrk issue/sign"
    CUSTOS_BIN=$BIN scripts/bench-wrk.sh "$DUR" 32
  done
done
