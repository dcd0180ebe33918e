"""Starts `custos server --config` with the NRF's SBI listener, sets up the NF CA with hvac,
and issues SBA client certificates for NF stand-ins (files usable by requests/schemathesis)."""
import os
import socket
import subprocess
import time

import hvac
import pytest
import requests

DOMAIN = "5gc.mnc001.mcc262.3gppnetwork.org"
NRF_ID = "11111111-1111-4111-8111-111111111111"
AMF_ID = "9e1f0b7a-6c2d-4b8e-a1f3-2d4c6e8f0a22"
SMF_ID = "5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c11"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port, deadline=30):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listening on {port}")


class Nrf:
    def __init__(self, d, mgmt, sbi, root):
        self.dir, self.mgmt, self.sbi, self.root = d, mgmt, sbi, root
        self.ca = os.path.join(d, "ca.pem")

    def url(self, path):
        return f"https://127.0.0.1:{self.sbi}{path}"

    def cert(self, nf_type, nf_id, name=None):
        """Issues an SBA certificate; returns (cert_file, key_file)."""
        c = hvac.Client(url=self.mgmt, token=self.root)
        r = c.secrets.pki.generate_certificate(
            "sba", f"{nf_type.lower()}1.{DOMAIN}", mount_point="pki",
            extra_params={"nf_instance_id": nf_id, "nf_type": nf_type})["data"]
        name = name or nf_type.lower()
        cf, kf = (os.path.join(self.dir, f"{name}.{x}.pem") for x in ("cert", "key"))
        open(cf, "w").write(r["certificate"] + "\n")
        open(kf, "w").write(r["private_key"] + "\n")
        return cf, kf

    def register(self, cert, nf_id, nf_type, extra=None):
        """PUTs a minimal NFProfile as the NF holding `cert`; retries until the SBI listener serves."""
        body = {"nfInstanceId": nf_id, "nfType": nf_type, "nfStatus": "REGISTERED",
                "fqdn": f"{nf_type.lower()}1.{DOMAIN}", **(extra or {})}
        for _ in range(50):  # the SBI listener serves once its own certificate is issued
            try:
                r = requests.put(self.url(f"/nnrf-nfm/v1/nf-instances/{nf_id}"), json=body, cert=cert, verify=self.ca)
                break
            except requests.exceptions.ConnectionError:
                time.sleep(0.2)
        assert r.status_code in (200, 201), r.text
        return r


@pytest.fixture(scope="session")
def nrf(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("nrf"))
    binary = os.environ.get("CUSTOS_BIN", os.path.join(os.path.dirname(__file__), "../../../target/debug/custos"))
    mport, sport = _free_port(), _free_port()
    open(os.path.join(d, "unseal.key"), "w").write("44" * 32)
    cfg = os.path.join(d, "custos.toml")
    open(cfg, "w").write(f"""
[storage]
backend = "sqlite"
path = "{d}/custos.db"
[listener]
address = "127.0.0.1:{mport}"
tls_disable = true
[seal]
type = "keyfile"
key_file = "{d}/unseal.key"
[sbi]
address = "127.0.0.1:{sport}"
pki_mount = "pki"
role = "sba"
nf_instance_id = "{NRF_ID}"
fqdn = "nrf.{DOMAIN}"
ip_sans = ["127.0.0.1"]
token_ttl = "10m"
""")
    proc = subprocess.Popen([binary, "server", "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(mport)
        mgmt = f"http://127.0.0.1:{mport}"
        root = hvac.Client(url=mgmt).sys.initialize(1, 1)["root_token"]
        c = hvac.Client(url=mgmt, token=root)
        c.sys.enable_secrets_engine("pki", path="pki", config={"max_lease_ttl": "87600h"})
        ca = c.secrets.pki.generate_root("internal", "NF CA", mount_point="pki",
                                         extra_params={"key_type": "ec", "ttl": "8760h"})["data"]["certificate"]
        c.secrets.pki.set_urls({"crl_distribution_points": [f"{mgmt}/v1/pki/crl"]}, mount_point="pki")
        c.secrets.pki.create_or_update_role("sba", {
            "profile": "3gpp-sba", "key_type": "ec", "allowed_domains": DOMAIN, "allow_subdomains": True,
            "allow_ip_sans": True, "country": "DE", "organization": DOMAIN, "ttl": "1h"}, mount_point="pki")
        n = Nrf(d, mgmt, sport, root)
        open(n.ca, "w").write(ca + "\n")
        _wait_port(sport)
        yield n
    finally:
        proc.terminate()
        proc.wait(timeout=10)
