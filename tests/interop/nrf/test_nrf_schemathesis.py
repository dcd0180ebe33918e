"""Schemathesis, driven by the official 3GPP OpenAPI files (TS 29.510 Rel-18, copied into
specs/3gpp-rel18/), against the NRF's SBI listener over mutual TLS with an SBA client
certificate. It generates valid and invalid requests for every operation Custos implements and
judges each answer against the same files: no 5xx, every status, content type, header and body
as the 3GPP schema says.

Path and query values are drawn, some of the time, from the NF stand-in's own identity, so the
generated requests reach past the identity checks into profile validation, discovery matching
and token issuance instead of stopping at 403."""
import os
import subprocess
import sys

import pytest
import requests

from conftest import AMF_ID, SMF_ID

SPECS = os.path.join(os.path.dirname(__file__), "../../../specs/3gpp-rel18")
# The checks that make "schema violations and 5xx: none" precise.
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])
EXAMPLES = os.environ.get("CUSTOS_SCHEMATHESIS_EXAMPLES", "40")


def _config(tmp_path, own):
    """A schemathesis.toml that steers identity-bearing fields toward the AMF stand-in: some
    of the time, or (`own`) always, so that requests reach profile validation and storage."""
    p = 1.0 if own else 0.6
    path = tmp_path / "schemathesis.toml"
    path.write_text(f"""
[dictionaries.own-id]
values = ["{AMF_ID}"]
[dictionaries.own-type]
values = ["AMF"]
[dictionaries.target-type]
values = ["SMF"]
[dictionaries.scope]
values = ["nsmf-pdusession"]
[dictionaries.status]
values = ["REGISTERED"]

[parameters]
"path.nfInstanceID" = {{ dictionary = "own-id", probability = {p} }}
"query.requester-nf-type" = {{ dictionary = "own-type", probability = 0.7 }}
"query.target-nf-type" = {{ dictionary = "target-type", probability = 0.5 }}
"body.nfInstanceId" = {{ dictionary = "own-id", probability = {p} }}
"body.nfType" = {{ dictionary = "own-type", probability = {p} }}
"body.nfStatus" = {{ dictionary = "status", probability = {p} }}
"body.targetNfType" = {{ dictionary = "target-type", probability = 0.5 }}
"body.scope" = {{ dictionary = "scope", probability = 0.5 }}
""")
    return str(path)


def _register_stand_ins(nrf):
    amf, smf = nrf.cert("AMF", AMF_ID), nrf.cert("SMF", SMF_ID)
    nrf.register(amf, AMF_ID, "AMF")
    nrf.register(smf, SMF_ID, "SMF", {"nfServices": [{
        "serviceInstanceId": "1", "serviceName": "nsmf-pdusession",
        "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.0.0"}],
        "scheme": "https", "nfServiceStatus": "REGISTERED"}]})
    return amf


NFM = ["RegisterNFInstance", "GetNFInstance", "UpdateNFInstance", "GetNFInstances",
       "DeregisterNFInstance"]


@pytest.mark.parametrize("spec,base,operations,own", [
    ("TS29510_Nnrf_AccessToken.yaml", "", ["AccessTokenRequest"], False),
    ("TS29510_Nnrf_NFManagement.yaml", "/nnrf-nfm/v1", NFM, False),
    # The caller's own profile: PUT/PATCH bodies get past the ownership check.
    ("TS29510_Nnrf_NFManagement.yaml", "/nnrf-nfm/v1", NFM, True),
    ("TS29510_Nnrf_NFDiscovery.yaml", "/nnrf-disc/v1", ["SearchNFInstances"], False),
], ids=["AccessToken", "NFManagement", "NFManagement-own", "NFDiscovery"])
def test_schemathesis_finds_no_5xx_and_no_schema_violation(nrf, tmp_path, spec, base, operations, own):
    cert, key = _register_stand_ins(nrf)
    cmd = [os.path.join(os.path.dirname(sys.executable), "schemathesis"),
           "--config-file", _config(tmp_path, own), "--no-color", "run",
           os.path.join(SPECS, spec), "--url", nrf.url(base),
           "--request-cert", cert, "--request-cert-key", key, "--tls-verify", nrf.ca,
           "--checks", CHECKS, "--max-examples", str(int(EXAMPLES) * (3 if own else 1)), "--seed", "5105",
           "--phases", "examples,fuzzing" if own else "examples,coverage,fuzzing", "--workers", "2",
           "--request-timeout", "10", "--warnings", "off",
           "--report", "har", "--report-dir", str(tmp_path / "report")]
    for op in operations:
        cmd += ["--include-operation-id", op]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    print(r.stdout[-20000:])
    print(r.stderr[-5000:], file=sys.stderr)
    assert r.returncode == 0, f"schemathesis found problems in {spec} (output above)"
    # The run tested every named operation (a filter typo would otherwise pass vacuously).
    assert "No operations" not in r.stdout
    # The stand-ins are still what they registered as: nothing the fuzzer sent replaced them
    # with another NF's identity.
    p = requests.get(nrf.url(f"/nnrf-nfm/v1/nf-instances/{AMF_ID}"), cert=(cert, key), verify=nrf.ca)
    assert p.status_code in (200, 404)
    if p.status_code == 200:
        assert p.json()["nfInstanceId"] == AMF_ID and p.json()["nfType"] == "AMF"
