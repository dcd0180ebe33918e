"""hvac's PKI methods against Custos's pki engine (dev server)."""
import subprocess
import uuid

import hvac
import pytest

DOMAIN = "5gc.mnc001.mcc262.3gppnetwork.org"


@pytest.fixture(scope="module")
def pki(server):
    client = hvac.Client(url=server["url"], token=server["root"])
    client.sys.enable_secrets_engine(backend_type="pki", path="pki", config={"max_lease_ttl": "87600h"})
    root = client.secrets.pki.generate_root(
        type="internal",
        common_name="Custos hvac Root",
        extra_params={"key_type": "ec", "ttl": "87600h", "country": "DE", "organization": DOMAIN},
        mount_point="pki",
    )
    client.secrets.pki.set_urls({"crl_distribution_points": [server["url"] + "/v1/pki/crl"]}, mount_point="pki")
    return client, root


def test_generate_root_returns_certificate_and_issuer(pki):
    _, root = pki
    assert root["data"]["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert root["data"]["issuer_id"]
    assert root["data"]["serial_number"].count(":") >= 7


def test_role_issue_and_revoke_with_sba_profile(pki):
    client, _ = pki
    client.secrets.pki.create_or_update_role(
        "amf",
        extra_params={
            "profile": "3gpp-sba", "key_type": "ec", "allowed_domains": DOMAIN, "allow_subdomains": True,
            "country": "DE", "organization": DOMAIN, "max_ttl": "720h",
        },
        mount_point="pki",
    )
    assert client.secrets.pki.read_role("amf", mount_point="pki")["data"]["profile"] == "3gpp-sba"
    nf_id = str(uuid.uuid4())
    cert = client.secrets.pki.generate_certificate(
        name="amf",
        common_name="amf1." + DOMAIN,
        extra_params={"nf_instance_id": nf_id, "nf_type": "AMF", "ttl": "24h"},
        mount_point="pki",
    )["data"]
    for field in ("certificate", "issuing_ca", "ca_chain", "private_key", "private_key_type", "serial_number", "expiration"):
        assert cert[field], field
    text = subprocess.run(["openssl", "x509", "-noout", "-text"], input=cert["certificate"], capture_output=True, text=True, check=True).stdout
    assert "URI:urn:uuid:" + nf_id in text
    revoked = client.secrets.pki.revoke_certificate(serial_number=cert["serial_number"], mount_point="pki")
    assert revoked["data"]["revocation_time"] > 0
    crl = client.secrets.pki.read_crl(mount_point="pki")
    assert crl.startswith("-----BEGIN X509 CRL-----")
    listed = subprocess.run(["openssl", "crl", "-noout", "-text"], input=crl, capture_output=True, text=True, check=True).stdout
    assert cert["serial_number"].replace(":", "").upper().lstrip("0") in listed.replace(" ", "").upper()


def test_sign_certificate_from_an_openssl_csr(pki, tmp_path):
    client, _ = pki
    client.secrets.pki.create_or_update_role(
        "web", extra_params={"allowed_domains": "example.com", "allow_subdomains": True, "key_type": "ec"}, mount_point="pki"
    )
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "r.csr"), "-subj", "/CN=svc.example.com"],
        check=True, capture_output=True,
    )
    csr = (tmp_path / "r.csr").read_text()
    signed = client.secrets.pki.sign_certificate(name="web", csr=csr, common_name="svc.example.com", mount_point="pki")["data"]
    assert signed["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert "private_key" not in signed or not signed["private_key"]


def test_list_issuers_and_certs(pki):
    client, root = pki
    issuers = client.secrets.pki.list_issuers(mount_point="pki")["data"]["keys"]
    assert root["data"]["issuer_id"] in issuers
    assert len(client.secrets.pki.list_certificates(mount_point="pki")["data"]["keys"]) >= 1


def test_out_of_role_request_is_invalid_request(pki):
    client, _ = pki
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        client.secrets.pki.generate_certificate(name="web", common_name="evil.org", mount_point="pki")
    assert "not allowed" in str(e.value)


def test_tidy_starts_and_reports_status(pki):
    client, _ = pki
    resp = client.secrets.pki.tidy(extra_params={"tidy_cert_store": True, "tidy_revoked_certs": True}, mount_point="pki")
    assert resp.status_code == 202
    status = client.read("pki/tidy-status")["data"]
    assert status["state"] in ("Running", "Finished")
