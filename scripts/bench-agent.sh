#!/usr/bin/env bash
# custos agent at rest: RSS and CPU with 2 certificate blocks (issue + sign), against a
# release `custos server --dev`. Not part of CI. Usage: scripts/bench-agent.sh [idle-seconds]
# With ATTEST=1 the agent also attests an swtpm device every ATTEST_INTERVAL (10s) through
# its [attest] block (the binary is built with --features tpm).
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${1:-30}; PORT=8297; HP=8298; TPMP=8299
if [ "${ATTEST:-0}" = 1 ]; then
  cargo build --release --locked --bin custos --features tpm
else
  cargo build --release --locked --bin custos
fi
BIN=$(pwd)/target/release/custos
TMP=$(mktemp -d)
$BIN server --dev --dev-root-token-id root --dev-listen-address 127.0.0.1:$PORT >/dev/null 2>&1 &
SRV=$!; trap 'kill $SRV ${AG:-} ${TPM:-} 2>/dev/null; rm -rf $TMP' EXIT; sleep 1
export CUSTOS_ADDR=http://127.0.0.1:$PORT CUSTOS_TOKEN=root
D=5gc.mnc001.mcc262.3gppnetwork.org
$BIN secrets enable -path=pki pki >/dev/null 2>&1 || $BIN write sys/mounts/pki type=pki >/dev/null
$BIN write pki/root/generate/internal common_name="Bench CA" key_type=ec ttl=87600h >/dev/null
$BIN write pki/config/urls crl_distribution_points="http://127.0.0.1:$PORT/v1/pki/crl" >/dev/null
$BIN write pki/roles/sba profile=3gpp-sba key_type=ec allowed_domains=$D allow_subdomains=true \
  country=DE organization=$D ttl=1h >/dev/null
$BIN write sys/auth/approle type=approle >/dev/null
printf 'path "pki/issue/sba" { capabilities = ["update"] }\npath "pki/sign/sba" { capabilities = ["update"] }\n' > $TMP/nf.hcl
$BIN policy write nf $TMP/nf.hcl >/dev/null
$BIN write auth/approle/role/nf token_policies=nf token_ttl=1h >/dev/null
$BIN read --format json auth/approle/role/nf/role-id | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["role_id"])' > $TMP/role_id
$BIN write --format json auth/approle/role/nf/secret-id | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["secret_id"])' > $TMP/secret_id
cat > $TMP/agent.toml <<TOML
[server]
address = "http://127.0.0.1:$PORT"
[auto_auth]
method = "approle"
role_id_file = "role_id"
secret_id_file = "secret_id"
[[certificate]]
name = "sbi"
role = "sba"
operation = "sign"
common_name = "amf.$D"
nf_instance_id = "4947a69a-f61b-4bc1-b9da-47c9c5d14b64"
nf_type = "AMF"
cert_file = "sbi/cert.pem"
key_file = "sbi/key.pem"
ca_file = "sbi/ca.pem"
[[certificate]]
name = "oam"
role = "sba"
operation = "issue"
common_name = "amf-oam.$D"
nf_instance_id = "4947a69a-f61b-4bc1-b9da-47c9c5d14b65"
nf_type = "AMF"
cert_file = "oam/cert.pem"
key_file = "oam/key.pem"
[health]
address = "127.0.0.1:$HP"
TOML
if [ "${ATTEST:-0}" = 1 ]; then
  mkdir -p $TMP/tpm-state
  swtpm_setup --tpm2 --tpmstate $TMP/tpm-state --createek --create-ek-cert --overwrite >/dev/null
  swtpm socket --tpm2 --tpmstate dir=$TMP/tpm-state --server type=tcp,port=$TPMP \
    --ctrl type=tcp,port=$((TPMP + 1)) --flags startup-clear &
  TPM=$!; sleep 0.5
  head -c 1M /dev/urandom > $TMP/fw.img
  TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=$TPMP tpm2_pcrextend "$($BIN attest measure $TMP/fw.img --log $TMP/boot.log)"
  FW=$(sha256sum $TMP/fw.img | cut -c1-64)
  $BIN write sys/mounts/attest type=attest >/dev/null
  printf '[[device_classes]]\nname = "du"\nallowed_digests = ["%s"]\n' "$FW" > $TMP/attest.toml
  printf '[[suppliers]]\nname = "acme"\nkeys = ["%s"]\n[[device_classes]]\nname = "du"\nsuppliers = ["acme"]\nbuilders = ["b"]\n' "$FW" > $TMP/fw.toml
  cat /var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem /var/lib/swtpm-localca/issuercert.pem > $TMP/mfr.pem
  $BIN write attest/config policy=@$TMP/attest.toml firmware_policy=@$TMP/fw.toml \
    provenance_mount=provenance manufacturer_ca_pem=@$TMP/mfr.pem >/dev/null
  printf 'path "attest/*" { capabilities = ["create", "read", "update"] }\n' >> $TMP/nf.hcl
  $BIN policy write nf $TMP/nf.hcl >/dev/null
  cat >> $TMP/agent.toml <<TOML
[attest]
device = "du-bench"
device_class = "du"
tcti = "swtpm:host=127.0.0.1,port=$TPMP"
state_dir = "tpm"
event_log = "boot.log"
interval = "${ATTEST_INTERVAL:-10s}"
enrol = true
TOML
fi
${AGENT_ENV:-} $BIN agent --config $TMP/agent.toml --log-level warn &
AG=$!
for _ in $(seq 100); do
  [ -s $TMP/sbi/cert.pem ] && [ -s $TMP/oam/cert.pem ] && break; sleep 0.1
done
sleep 2
ticks() { awk '{print $14 + $15}' /proc/$AG/stat; }
HZ=$(getconf CLK_TCK); T0=$(ticks); sleep "$IDLE"; T1=$(ticks)
RSS=$(awk '/VmRSS/ {print $2}' /proc/$AG/status)
grep -E "^(Rss|Pss_Anon|Pss_File|Anonymous)" /proc/$AG/smaps_rollup; grep Threads /proc/$AG/status
[ "${ATTEST:-0}" = 1 ] && curl -s http://127.0.0.1:$HP/metrics | grep -E '^custos_agent_(attest|attested)'
echo "agent idle with 2 certificate blocks${ATTEST:+ and attestation every ${ATTEST_INTERVAL:-10s}}: RSS $((RSS / 1024)) MiB ($RSS kB; target <= 15 MB)"
python3 -c "print(f'agent idle CPU over ${IDLE}s: {($T1-$T0)/$HZ:.2f} CPU-s = {100*($T1-$T0)/$HZ/$IDLE:.3f}% of one core')"
curl -s http://127.0.0.1:$HP/metrics | grep -E '^custos_agent_(renewals|certificate_expiry)'
