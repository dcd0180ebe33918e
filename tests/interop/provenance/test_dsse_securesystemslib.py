"""DSSE interop judged by securesystemslib (the signing library python in-toto is built on):
it verifies the envelopes of a Custos bundle signed with ECDSA P-256 and with Ed25519 keys,
and Custos verifies envelopes that securesystemslib signed. Key IDs are computed here,
independently, as the SHA-256 of the SubjectPublicKeyInfo."""
import base64
import copy
import hashlib
import json
import os
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (Encoding, PublicFormat,
                                                          load_pem_public_key)
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

BIN = os.environ.get("CUSTOS_BIN", os.path.join(os.path.dirname(__file__), "../../../target/debug/custos"))
SCHEMES = {"ecdsa-p256": "ecdsa-sha2-nistp256", "ed25519": "ed25519"}


def custos(cwd, *args):
    return subprocess.run([BIN, *args], cwd=cwd, capture_output=True, text=True)


def spki_id(pub) -> str:
    return hashlib.sha256(pub.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


@pytest.mark.parametrize("alg", ["ecdsa-p256", "ed25519"])
def test_securesystemslib_verifies_a_custos_bundle(tmp_path, alg):
    image = os.urandom(200_000)
    (tmp_path / "fw.img").write_bytes(image)
    r = custos(tmp_path, "fw", "keygen", "--alg", alg, "--out", "k.pem")
    assert r.returncode == 0, r.stderr
    r = custos(tmp_path, "fw", "sign", "fw.img", "--key", "k.pem", "--out", "b.json",
               "--vendor", "acme", "--device-class", "gnb-du-x1", "--version", "5.2.0",
               "--security-version", "5", "--not-after", "180d",
               "--builder-id", "https://ci.acme.example/builders/firmware@v1",
               "--source-repo", "git+https://git.acme.example/ran/du-firmware", "--commit", "7d2c9b1e")
    assert r.returncode == 0, r.stderr
    bundle = json.loads((tmp_path / "b.json").read_text())
    pub = load_pem_public_key(bundle["verificationMaterial"]["publicKeys"][0].encode())
    keyid = spki_id(pub)
    key = SSlibKey.from_crypto(pub, keyid=keyid, scheme=SCHEMES[alg])
    kinds = set()
    for env_dict in bundle["dsseEnvelopes"]:
        assert env_dict["signatures"][0]["keyid"] == keyid
        env = Envelope.from_dict(copy.deepcopy(env_dict))  # from_dict rewrites its input
        assert env.payload_type == "application/vnd.in-toto+json"
        accepted = env.verify([key], 1)
        assert list(accepted) == [keyid]
        stmt = json.loads(env.payload)
        assert stmt["_type"] == "https://in-toto.io/Statement/v1"
        assert stmt["subject"][0]["digest"]["sha256"] == hashlib.sha256(image).hexdigest()
        assert stmt["subject"][0]["digest"]["sha512"] == hashlib.sha512(image).hexdigest()
        kinds.add(stmt["predicateType"])
        # A tampered payload fails the same check.
        bad = dict(copy.deepcopy(env_dict), payload=base64.b64encode(env.payload + b" ").decode())
        with pytest.raises(VerificationError):
            Envelope.from_dict(bad).verify([key], 1)
    assert kinds == {"https://slsa.dev/provenance/v1", "https://custos.dev/attestation/firmware/v1"}
    statements = [json.loads(base64.b64decode(e["payload"])) for e in bundle["dsseEnvelopes"]]
    slsa = next(s for s in statements if s["predicateType"] == "https://slsa.dev/provenance/v1")
    assert slsa["predicate"]["runDetails"]["builder"]["id"] == "https://ci.acme.example/builders/firmware@v1"
    assert slsa["predicate"]["buildDefinition"]["externalParameters"]["source"]["digest"]["gitCommit"] == "7d2c9b1e"


def crypto_pub(k: SSlibKey):
    """The `cryptography` key behind an SSlibKey (keyval: raw hex for Ed25519, PEM otherwise)."""
    if k.keytype == "ed25519":
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(k.keyval["public"]))
    return load_pem_public_key(k.keyval["public"].encode())


@pytest.mark.parametrize("alg", ["ecdsa-p256", "ed25519"])
def test_custos_verifies_an_envelope_securesystemslib_signed(tmp_path, alg):
    signer = CryptoSigner.generate_ecdsa() if alg == "ecdsa-p256" else CryptoSigner.generate_ed25519()
    statement = {"_type": "https://in-toto.io/Statement/v1",
                 "subject": [{"name": "fw.img", "digest": {"sha256": "ab" * 32}}],
                 "predicateType": "https://slsa.dev/provenance/v1",
                 "predicate": {"buildDefinition": {"buildType": "x"}, "runDetails": {"builder": {"id": "y"}}}}
    payload = json.dumps(statement).encode()
    env = Envelope(payload=payload, payload_type="application/vnd.in-toto+json", signatures={})
    env.sign(signer)
    (tmp_path / "env.json").write_text(json.dumps(env.to_dict()))
    pub = crypto_pub(signer.public_key)
    (tmp_path / "pub.pem").write_bytes(pub.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    r = custos(tmp_path, "fw", "verify-envelope", "env.json", "--key", "pub.pem", "--payload-out", "p.json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VALID" in r.stdout and spki_id(pub) in r.stdout
    assert (tmp_path / "p.json").read_bytes() == payload
    # Another key, or an edited payload: invalid (exit 1).
    other = crypto_pub(CryptoSigner.generate_ed25519().public_key)
    (tmp_path / "other.pem").write_bytes(other.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    r = custos(tmp_path, "fw", "verify-envelope", "env.json", "--key", "other.pem")
    assert r.returncode == 1, r.stdout + r.stderr
    d = env.to_dict()
    d["payload"] = base64.b64encode(payload.replace(b"ab", b"cd", 1)).decode()
    (tmp_path / "bad.json").write_text(json.dumps(d))
    r = custos(tmp_path, "fw", "verify-envelope", "bad.json", "--key", "pub.pem")
    assert r.returncode == 1, r.stdout + r.stderr


@pytest.mark.parametrize("alg", ["ecdsa-p256", "ed25519"])
def test_keys_from_fw_keygen_load_in_python_cryptography_and_openssl(tmp_path, alg):
    """`custos fw keygen` writes PKCS#8 that other tools read: python `cryptography` and
    `openssl pkey` (OpenSSL 3.0 refuses Ed25519 PKCS#8 v2 with the public key embedded); the
    public key they derive is the one Custos wrote beside it."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    r = custos(tmp_path, "fw", "keygen", "--alg", alg, "--out", "k.pem")
    assert r.returncode == 0, r.stderr
    pem = (tmp_path / "k.pem").read_bytes()
    key = load_pem_private_key(pem, password=None)
    pub = load_pem_public_key((tmp_path / "k.pem.pub").read_bytes())
    assert spki_id(key.public_key()) == spki_id(pub)
    o = subprocess.run(["openssl", "pkey", "-in", "k.pem", "-pubout"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert o.returncode == 0, o.stderr
    assert spki_id(load_pem_public_key(o.stdout.encode())) == spki_id(pub)
