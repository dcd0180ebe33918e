#!/usr/bin/env bash
# `custos fw verify` throughput and memory: 100 MiB and 1 GiB images, against the machine's
# single-core SHA-256 limit (`openssl speed -evp sha256`) measured in the same run, and
# against python (hashlib + securesystemslib, python in-toto's DSSE library) doing the same
# verification. Run from the repository root; builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --locked --bin custos
C="$(pwd)/target/release/custos"
PY="$(pwd)/target/interop-venv/bin/python"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
KID=$("$C" fw keygen --alg ecdsa-p256 --out k.pem | awk '/key ID/ {print $NF}')
cat > policy.toml <<TOML
[[suppliers]]
name = "acme"
keys = ["$KID"]
[[device_classes]]
name = "gnb-du"
suppliers = ["acme"]
builders = ["https://ci.acme.example/b@v1"]
TOML
SSL=$(openssl speed -seconds 3 -bytes 1048576 -evp sha256 2>/dev/null | awk '/^sha256/ {print $NF}' | sed 's/k$//')
SSL_MBS=$(awk -v k="$SSL" 'BEGIN {printf "%.0f", k*1000/1048576}')
echo "machine limit (same run): openssl speed -evp sha256, 1 MiB blocks, 1 core: ${SSL_MBS} MiB/s"
for MB in 100 1024; do
  head -c $((MB << 20)) /dev/urandom > img
  "$C" fw sign img --key k.pem --out b.json --vendor acme --device-class gnb-du --version 1 \
    --security-version 1 --not-after 30d --builder-id https://ci.acme.example/b@v1 \
    --source-repo x --commit y >/dev/null
  cat img > /dev/null  # page cache warm, as a device verifying a just-downloaded image
  best=999
  for _ in 1 2 3; do
    /usr/bin/time -f "%e %M" -o t "$C" fw verify img --bundle b.json --policy policy.toml >/dev/null
    read -r secs rss < t
    best=$(awk -v a="$best" -v b="$secs" 'BEGIN {print (b < a) ? b : a}')
  done
  dgst=999
  for _ in 1 2 3; do
    /usr/bin/time -f "%e" -o t openssl dgst -sha256 img >/dev/null
    dgst=$(awk -v a="$dgst" -v b="$(cat t)" 'BEGIN {print (b < a) ? b : a}')
  done
  RATE=$(awk -v m="$MB" -v s="$best" 'BEGIN {printf "%.0f", m/s}')
  RATIO=$(awk -v r="$RATE" -v l="$SSL_MBS" 'BEGIN {printf "%.2f", r/l}')
  FILE_RATIO=$(awk -v c="$best" -v o="$dgst" 'BEGIN {printf "%.2f", o/c}')
  echo "fw verify ${MB} MiB: ${best} s = ${RATE} MiB/s = ${RATIO} of openssl speed (in-cache SHA-256); max RSS $((rss / 1024)) MiB"
  echo "  openssl dgst -sha256 of the same file: ${dgst} s; fw verify = ${FILE_RATIO} of it"
  if [ -x "$PY" ]; then
    PYS=$("$PY" - <<'PYEOF'
import base64, copy, hashlib, json, time
from cryptography.hazmat.primitives.serialization import load_pem_public_key, Encoding, PublicFormat
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
t = time.perf_counter()
b = json.load(open("b.json"))
pub = load_pem_public_key(b["verificationMaterial"]["publicKeys"][0].encode())
kid = hashlib.sha256(pub.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()
key = SSlibKey.from_crypto(pub, keyid=kid, scheme="ecdsa-sha2-nistp256")
h = hashlib.sha256()
with open("img", "rb") as f:
    while chunk := f.read(1 << 20):
        h.update(chunk)
for e in b["dsseEnvelopes"]:
    env = Envelope.from_dict(copy.deepcopy(e))
    env.verify([key], 1)
    assert json.loads(env.payload)["subject"][0]["digest"]["sha256"] == h.hexdigest()
print(f"{time.perf_counter() - t:.3f}")
PYEOF
)
    echo "  python (hashlib + securesystemslib) same verification: ${PYS} s; custos is $(awk -v p="$PYS" -v c="$best" 'BEGIN {printf "%.2f", p/c}')x faster"
  fi
done
