#!/usr/bin/env bash
# Regenerates the seed corpus in fuzz/corpus/<target>/ from real artefacts: OpenSSL's CSRs,
# certificates and OCSP requests, and what a dev server and `custos fw` produce (audit
# lines, checkpoints, tiles, entries, receipts, bundles). Run from the repository root with
# a built target/debug/custos; the files are committed, CI only replays them.
set -euo pipefail
cd "$(dirname "$0")/.."
C="$(pwd)/target/debug/custos"
OUT="$(pwd)/fuzz/corpus"
W=$(mktemp -d); trap 'kill $SRV 2>/dev/null; rm -rf "$W"' EXIT
mkdir -p "$OUT"/{acl_policy,audit_verify,barrier_open,pki_csr,pki_lint,pki_ocsp_request,pki_ocsp_response,tlog_parsers,tlog_witness_request,tlog_entry_receipt,monitor_rules,provenance_inputs,nrf_requests,jwt_header,attest_quote,attest_eventlog}
# attest_quote and attest_eventlog: a quote, signature and AK public area from swtpm (tpm2_quote,
# tpm2_createak) and tpm2-tools' real event logs (crates/attest/tests/fixtures), copied by hand.
PORT=8297
"$C" server --dev --dev-root-token-id root --dev-listen-address 127.0.0.1:$PORT >/dev/null 2>&1 &
SRV=$!; sleep 1
export CUSTOS_ADDR=http://127.0.0.1:$PORT CUSTOS_TOKEN=root
cd "$W"
# ACL policies (HCL and JSON).
printf 'path "secret/+/db" {\n  capabilities = ["read", "list"]\n  allowed_parameters = { "ttl" = [] }\n}\npath "sys/*" { capabilities = ["deny"] }\n' > "$OUT/acl_policy/hcl"
printf '{"path": {"pki/issue/*": {"capabilities": ["update"], "required_parameters": ["common_name"]}}}' > "$OUT/acl_policy/json"
# Audit lines from a real device.
"$C" write sys/audit/file type=file options="{\"file_path\": \"$W/audit.log\"}" >/dev/null 2>&1 || \
  curl -s -X PUT -H "X-Vault-Token: root" -d "{\"type\":\"file\",\"options\":{\"file_path\":\"$W/audit.log\"}}" "$CUSTOS_ADDR/v1/sys/audit/file" >/dev/null
"$C" write secret/a k=v >/dev/null; "$C" read secret/a >/dev/null
cp audit.log "$OUT/audit_verify/device.log"
head -c 96 /dev/urandom > "$OUT/barrier_open/random"
# CSRs, a certificate and an OCSP request from OpenSSL.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -subj "/CN=amf.5gc.example" -out csr.pem 2>/dev/null
cp csr.pem "$OUT/pki_csr/ec.pem"; openssl req -in csr.pem -outform DER -out "$OUT/pki_csr/ec.der"
openssl req -x509 -new -key k.pem -subj "/CN=ca.example" -days 30 -out ca.pem 2>/dev/null
cp ca.pem "$OUT/pki_lint/self-signed.pem"; openssl x509 -in ca.pem -outform DER -out "$OUT/pki_lint/self-signed.der"
openssl ocsp -issuer ca.pem -cert ca.pem -reqout "$OUT/pki_ocsp_request/one.der" -no_nonce >/dev/null 2>&1
cp "$OUT/pki_ocsp_request/one.der" "$OUT/pki_ocsp_response/not-a-response.der"
head -c 300 /dev/urandom > "$OUT/pki_ocsp_response/random"
# The transparency log: checkpoint, a tile path, an entry bundle, an entry and a receipt.
"$C" write sys/policies/acl/p policy='path "a" { capabilities = ["read"] }' >/dev/null
curl -s "$CUSTOS_ADDR/v1/sys/tlog/checkpoint" > "$OUT/tlog_parsers/checkpoint"
printf 'tile/0/x001/234.p/5' > "$OUT/tlog_parsers/tile-path"
SIZE=$(sed -n 2p "$OUT/tlog_parsers/checkpoint")
curl -s "$CUSTOS_ADDR/v1/sys/tlog/tile/entries/000.p/$SIZE" > "$OUT/tlog_parsers/bundle"
curl -s "$CUSTOS_ADDR/v1/sys/tlog/tile/0/000.p/$SIZE" > "$OUT/tlog_parsers/hash-tile"
{ printf 'old 0\n\n'; cat "$OUT/tlog_parsers/checkpoint"; } > "$OUT/tlog_witness_request/first"
curl -s "$CUSTOS_ADDR/v1/sys/tlog/entry/0" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["data"]))' > "$OUT/tlog_entry_receipt/receipt.json"
python3 -c 'import json,base64,sys; print(base64.b64decode(json.load(open(sys.argv[1]))["entry"]).decode(), end="")' "$OUT/tlog_entry_receipt/receipt.json" > "$OUT/tlog_entry_receipt/entry.json"
# Monitor rules (README's example, every section).
cat > "$OUT/monitor_rules/all.toml" <<'TOML'
[signing]
allowed_signers = ["3f0c", "https://ci.acme.example/signers/release"]
[signing.device_classes]
"https://ci.acme.example/builders/firmware@v1" = ["gnb-du-x1"]
[[signing.windows]]
days = ["sat", "sun"]
start = "01:00"
end = "05:00"
[burst]
per_minute = 50
[issuance]
roles = { sba-amf = ["AMF"] }
unlisted_roles = "alert"
[ca]
allowed = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
TOML
# A provenance bundle, a policy and a device state from custos fw.
echo "firmware" > fw.img
KID=$("$C" fw keygen --alg ed25519 --out fw.pem | awk '/key ID/ {print $NF}')
"$C" fw sign fw.img --key fw.pem --out "$OUT/provenance_inputs/bundle.json" --vendor acme \
  --device-class gnb-du-x1 --version 1.0.0 --security-version 1 --not-after 30d \
  --builder-id https://ci.acme.example/b@v1 --source-repo git+https://git.acme.example/fw --commit 7d2c9b1e >/dev/null
printf '[[suppliers]]\nname = "acme"\nkeys = ["%s"]\n[[device_classes]]\nname = "gnb-du-x1"\nsuppliers = ["acme"]\n' "$KID" > "$OUT/provenance_inputs/policy.toml"
"$C" fw init-state --state "$OUT/provenance_inputs/state.json" --device-class gnb-du-x1 --image fw.img --version 1.0.0 --security-version 1 >/dev/null
# NRF inputs: a profile and a token request form.
printf '{"nfInstanceId":"5a0c1e2d-0000-4000-8000-000000000001","nfType":"AMF","nfStatus":"REGISTERED","fqdn":"amf.5gc.example","allowedNfTypes":["SMF"],"sNssais":[{"sst":1,"sd":"000001"}],"nfServices":[{"serviceInstanceId":"a","serviceName":"namf-comm","versions":[{"apiVersionInUri":"v1","apiFullVersion":"1.0.0"}],"scheme":"https","nfServiceStatus":"REGISTERED"}]}' > "$OUT/nrf_requests/profile.json"
printf 'grant_type=client_credentials&nfInstanceId=5a0c1e2d-0000-4000-8000-000000000001&nfType=AMF&targetNfType=SMF&scope=nsmf-pdusession' > "$OUT/nrf_requests/token-form"
# A JWT and a JWKS document.
printf 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwic3ViIjoiY2kiLCJleHAiOjE4MDAwMDAwMDB9.c2ln' > "$OUT/jwt_header/es256.jwt"
curl -s "http://127.0.0.1:$PORT/v1/sys/tlog/key" >/dev/null
printf '{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","alg":"ES256","use":"sig"}]}' > "$OUT/jwt_header/jwks.json"
echo "seed corpus written to $OUT"
