#!/usr/bin/env bash
# PKI issue/sign throughput with wrk (a C load generator, so the client takes little of the
# 2 cores) against a release `custos server --dev` in its own process. Not part of CI.
# Usage: scripts/bench-wrk.sh [seconds] [connections]
# CUSTOS_BIN=path benches that binary instead of building target/release/custos.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}; CONN=${2:-32}; PORT=8299
command -v wrk >/dev/null || apt-get install -y -qq wrk
if [ -z "${CUSTOS_BIN:-}" ]; then cargo build --release --locked --bin custos; fi
BIN=${CUSTOS_BIN:-target/release/custos}
$BIN server --dev --dev-root-token-id root --dev-listen-address 127.0.0.1:$PORT >/dev/null 2>&1 &
SRV=$!; trap 'kill $SRV' EXIT; sleep 1
export CUSTOS_ADDR=http://127.0.0.1:$PORT CUSTOS_TOKEN=root
# Sets up the bench-pki mount (EC P-256 root, SBA role) exactly as `custos bench` does.
$BIN bench --remote --ops pki-issue --duration 1 >/dev/null
TMP=$(mktemp -d); trap 'kill $SRV; rm -rf $TMP' EXIT
D=5gc.mnc001.mcc262.3gppnetwork.org; ID=4947a69a-f61b-4bc1-b9da-47c9c5d14b64
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $TMP/k.pem \
  -subj "/CN=amf.$D" -out $TMP/c.pem 2>/dev/null
python3 - "$TMP" "$D" "$ID" <<'PY'
import json, sys
tmp, d, nf = sys.argv[1:]
csr = open(f"{tmp}/c.pem").read()
for op, body in [("issue", {}), ("sign", {"csr": csr})]:
    body.update({"common_name": f"amf.{d}", "nf_instance_id": nf, "nf_type": "AMF"})
    open(f"{tmp}/{op}.lua", "w").write(
        'wrk.method = "POST"\nwrk.headers["X-Vault-Token"] = "root"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n")
PY
openssl speed -seconds 2 ecdsap256 2>/dev/null | tail -1 | sed 's/^/openssl speed (1 core): /'
for op in issue sign; do
  echo "== $op/:role, $CONN connections, ${DUR}s"
  wrk -t1 -c"$CONN" -d"${DUR}s" -s "$TMP/$op.lua" "http://127.0.0.1:$PORT/v1/bench-pki/$op/nf" \
    | grep -E "Latency|Requests/sec|Non-2xx"
done
