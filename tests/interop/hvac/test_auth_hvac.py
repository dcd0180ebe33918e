"""Login methods through hvac: AppRole, JWT (keys from a JWKS the test serves, RS256 and
ES256, signed by PyJWT) and Kubernetes (a service-account-shaped token). Each login returns a
token limited to its role's policies."""
import base64
import datetime
import hashlib
import hmac
import http.server
import json
import threading
import time
import uuid

import hvac
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

POLICY = 'path "secret/nf/*" { capabilities = ["read"] }'


def _client(server, token):
    return hvac.Client(url=server["url"], token=token)


def _only_role_policy(server, token):
    c = _client(server, token)
    self_ = c.auth.token.lookup_self()["data"]
    assert sorted(self_["policies"]) == ["default", "nf-read"], self_
    root = _client(server, server["root"])
    root.secrets.kv.v1.create_or_update_secret("nf/amf", {"k": "v"}, mount_point="secret")
    assert c.secrets.kv.v1.read_secret("nf/amf", mount_point="secret")["data"]["k"] == "v"
    with pytest.raises(hvac.exceptions.Forbidden):
        c.secrets.kv.v1.create_or_update_secret("nf/amf", {"k": "x"}, mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        c.sys.list_mounted_secrets_engines()


@pytest.fixture(scope="module")
def policy(server):
    _client(server, server["root"]).sys.create_or_update_policy("nf-read", POLICY)


def test_approle_login_returns_a_token_with_the_roles_policies(server, policy):
    root = _client(server, server["root"])
    root.sys.enable_auth_method("approle", path="approle-t")
    root.auth.approle.create_or_update_approle(
        "amf", token_policies=["nf-read"], token_ttl="10m", secret_id_num_uses=2,
        mount_point="approle-t")
    role_id = root.auth.approle.read_role_id("amf", mount_point="approle-t")["data"]["role_id"]
    secret = root.auth.approle.generate_secret_id("amf", mount_point="approle-t")["data"]["secret_id"]
    c = hvac.Client(url=server["url"])
    r = c.auth.approle.login(role_id=role_id, secret_id=secret, mount_point="approle-t")
    assert r["auth"]["lease_duration"] == 600
    assert r["auth"]["metadata"]["role_name"] == "amf"
    _only_role_policy(server, r["auth"]["client_token"])
    # Second use allowed, third refused: secret_id_num_uses=2.
    c.auth.approle.login(role_id=role_id, secret_id=secret, mount_point="approle-t")
    with pytest.raises(hvac.exceptions.Forbidden):
        c.auth.approle.login(role_id=role_id, secret_id=secret, mount_point="approle-t")
    with pytest.raises(hvac.exceptions.Forbidden):
        c.auth.approle.login(role_id=role_id, secret_id="wrong", mount_point="approle-t")


class _Jwks(http.server.BaseHTTPRequestHandler):
    doc = {"keys": []}
    hits = 0

    def do_GET(self):  # noqa: N802 (http.server API)
        type(self).hits += 1
        body = json.dumps(type(self).doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def jwks():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/jwks.json"
    srv.shutdown()


def _jwk(public_key, alg, kid):
    algo = RSAAlgorithm if alg == "RS256" else ECAlgorithm
    d = json.loads(algo.to_jwk(public_key))
    d.update({"kid": kid, "alg": alg, "use": "sig"})
    return d


ISS = "https://idp.5gc.example"


def _claims(**over):
    now = int(time.time())
    c = {"iss": ISS, "aud": "custos", "sub": "nf-amf-01", "iat": now, "nbf": now,
         "exp": now + 300, "nf_type": "AMF", "plmn": "262-01"}
    c.update(over)
    return c


def test_jwt_login_with_rs256_and_es256_from_a_served_jwks(server, policy, jwks):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    _Jwks.doc = {"keys": [_jwk(rsa_key.public_key(), "RS256", "r1"),
                          _jwk(ec_key.public_key(), "ES256", "e1")]}
    root = _client(server, server["root"])
    root.sys.enable_auth_method("jwt", path="jwt-t")
    root.auth.jwt.configure(jwks_url=jwks, bound_issuer=ISS, path="jwt-t")
    root.auth.jwt.create_role(
        "nf", allowed_redirect_uris=[], user_claim="sub", bound_audiences=["custos"], role_type="jwt",
        bound_claims={"nf_type": ["AMF", "SMF"]}, claim_mappings={"plmn": "plmn"},
        token_policies=["nf-read"], token_ttl="5m", path="jwt-t")
    c = hvac.Client(url=server["url"])
    for key, alg, kid in [(rsa_key, "RS256", "r1"), (ec_key, "ES256", "e1")]:
        t = jwt.encode(_claims(), key, algorithm=alg, headers={"kid": kid})
        r = c.auth.jwt.jwt_login("nf", t, path="jwt-t")
        assert r["auth"]["metadata"]["plmn"] == "262-01"
        assert r["auth"]["lease_duration"] == 300
        _only_role_policy(server, r["auth"]["client_token"])

    # Attacks, each refused (400/403), none yields a token.
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    unsigned = jwt.encode(_claims(), None, algorithm="none")
    # PyJWT itself refuses to key HMAC with a public key, so the forgery is built by hand.
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")  # noqa: E731
    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "r1"}).encode()) + b"." + \
        b64(json.dumps(_claims()).encode())
    hmac_confusion = (signing_input + b"." + b64(hmac.new(pem, signing_input, hashlib.sha256).digest())).decode()
    attacks = {
        "alg none": unsigned,
        "HS256 keyed with the RSA public key": hmac_confusion,
        "expired": jwt.encode(_claims(exp=int(time.time()) - 3600), rsa_key, "RS256", headers={"kid": "r1"}),
        "wrong audience": jwt.encode(_claims(aud="other"), rsa_key, "RS256", headers={"kid": "r1"}),
        "wrong issuer": jwt.encode(_claims(iss="https://evil.example"), rsa_key, "RS256", headers={"kid": "r1"}),
        "bound claim mismatch": jwt.encode(_claims(nf_type="UDM"), rsa_key, "RS256", headers={"kid": "r1"}),
        "unknown kid": jwt.encode(_claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048),
                                  "RS256", headers={"kid": "r9"}),
    }
    for name, token in attacks.items():
        with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
            c.auth.jwt.jwt_login("nf", token, path="jwt-t")
            pytest.fail(f"{name}: accepted")


def test_jwt_unknown_kid_refreshes_the_jwks_once_then_accepts_a_rotated_key(server, policy, jwks):
    root = _client(server, server["root"])
    root.sys.enable_auth_method("jwt", path="jwt-rot")
    k1 = ec.generate_private_key(ec.SECP256R1())
    _Jwks.doc = {"keys": [_jwk(k1.public_key(), "ES256", "old")]}
    root.auth.jwt.configure(jwks_url=jwks, bound_issuer=ISS, path="jwt-rot")
    root.auth.jwt.create_role("nf", allowed_redirect_uris=[], user_claim="sub", bound_audiences=["custos"],
                              token_policies=["nf-read"], path="jwt-rot")
    c = hvac.Client(url=server["url"])
    c.auth.jwt.jwt_login("nf", jwt.encode(_claims(), k1, "ES256", headers={"kid": "old"}), path="jwt-rot")
    # The IdP rotates: a token with a new kid makes the server fetch the JWKS again.
    k2 = ec.generate_private_key(ec.SECP256R1())
    _Jwks.doc = {"keys": [_jwk(k2.public_key(), "ES256", "new")]}
    time.sleep(10.5)  # the refresh rate limit
    c.auth.jwt.jwt_login("nf", jwt.encode(_claims(), k2, "ES256", headers={"kid": "new"}), path="jwt-rot")
    # Unknown kids do not make the server hammer the IdP: one fetch per rate-limit window.
    before = _Jwks.hits
    for i in range(20):
        with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
            c.auth.jwt.jwt_login("nf", jwt.encode(_claims(), k2, "ES256", headers={"kid": f"x{i}"}), path="jwt-rot")
    assert _Jwks.hits - before <= 1


def _sa_token(key, ns, name, aud="custos"):
    now = int(time.time())
    return jwt.encode({
        "iss": "https://kubernetes.default.svc.cluster.local", "aud": [aud],
        "sub": f"system:serviceaccount:{ns}:{name}", "iat": now, "nbf": now, "exp": now + 600,
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": str(uuid.uuid4())},
                          "pod": {"name": f"{name}-0", "uid": str(uuid.uuid4())}},
    }, key, algorithm="RS256", headers={"kid": "sa"})


def test_kubernetes_login_with_a_service_account_token(server, policy):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # hvac accepts pem_keys only as certificates; the server uses the certificate's key.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "service-account-signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    root = _client(server, server["root"])
    root.sys.enable_auth_method("kubernetes", path="k8s-t")
    root.auth.kubernetes.configure("https://kubernetes.default.svc", pem_keys=[pem], issuer="https://kubernetes.default.svc.cluster.local",
                                   mount_point="k8s-t")
    root.auth.kubernetes.create_role("amf", bound_service_account_names=["amf"],
                                     bound_service_account_namespaces=["5gc"], audience="custos",
                                     policies=["nf-read"], ttl="10m", mount_point="k8s-t")
    c = hvac.Client(url=server["url"])
    r = c.auth.kubernetes.login("amf", _sa_token(key, "5gc", "amf"), mount_point="k8s-t")
    assert r["auth"]["metadata"]["service_account_namespace"] == "5gc"
    _only_role_policy(server, r["auth"]["client_token"])
    for token in [_sa_token(key, "5gc", "smf"), _sa_token(key, "default", "amf"),
                  _sa_token(key, "5gc", "amf", aud="other")]:
        with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
            c.auth.kubernetes.login("amf", token, mount_point="k8s-t")


def test_kubernetes_login_validated_offline_with_the_clusters_jwks(server, policy, jwks):
    """The cluster's service-account issuer publishes its keys as a JWKS
    (<issuer>/openid/v1/jwks); Custos validates projected tokens with them offline."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _Jwks.doc = {"keys": [_jwk(key.public_key(), "RS256", "sa")]}
    root = _client(server, server["root"])
    root.sys.enable_auth_method("kubernetes", path="k8s-jwks")
    root.write("auth/k8s-jwks/config", kubernetes_host="https://kubernetes.default.svc",
               jwks_url=jwks, issuer="https://kubernetes.default.svc.cluster.local")
    root.auth.kubernetes.create_role("amf", bound_service_account_names=["amf"],
                                     bound_service_account_namespaces=["5gc"], audience="custos",
                                     policies=["nf-read"], ttl="10m", mount_point="k8s-jwks")
    c = hvac.Client(url=server["url"])
    r = c.auth.kubernetes.login("amf", _sa_token(key, "5gc", "amf"), mount_point="k8s-jwks")
    assert r["auth"]["metadata"]["service_account_name"] == "amf"
    _only_role_policy(server, r["auth"]["client_token"])
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in [_sa_token(other, "5gc", "amf"), _sa_token(key, "kube-system", "amf")]:
        with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
            c.auth.kubernetes.login("amf", token, mount_point="k8s-jwks")


FULCIO = "1.3.6.1.4.1.57264.1."


def _fulcio_extensions(cert):
    """Fulcio's v2 extensions (DER UTF8String values), by last OID arc."""
    out = {}
    for e in cert.extensions:
        if e.oid.dotted_string.startswith(FULCIO):
            raw = e.value.value
            assert raw[0] == 0x0C and raw[1] == len(raw) - 2, raw  # short-form UTF8String
            assert not e.critical
            out[int(e.oid.dotted_string[len(FULCIO):])] = raw[2:].decode()
    return out


def test_keyless_code_signing_certificate_carries_the_jwt_login_identity(server, jwks):
    """A CI job logs in with its OIDC token (PyJWT-signed); the 10-minute code-signing
    certificate carries the verified issuer and the mapped claims in Fulcio's extensions, and
    the URI SAN is the workflow identity from the token, whatever the request asks."""
    key = ec.generate_private_key(ec.SECP256R1())
    _Jwks.doc = {"keys": [_jwk(key.public_key(), "ES256", "ci")]}
    root = _client(server, server["root"])
    root.sys.enable_auth_method("jwt", path="jwt-ci")
    root.auth.jwt.configure(jwks_url=jwks, bound_issuer=ISS, path="jwt-ci")
    root.sys.create_or_update_policy("codesign", 'path "pki-ci/sign/codesign" { capabilities = ["update"] }')
    root.auth.jwt.create_role(
        "builder", allowed_redirect_uris=[], user_claim="sub", bound_audiences=["custos"],
        role_type="jwt", token_policies=["codesign"], token_ttl="5m", path="jwt-ci",
        claim_mappings={"job_workflow_ref": "build_signer_uri", "repository_url": "source_repository_uri",
                        "sha": "source_repository_digest", "ref": "source_repository_ref",
                        "iss_spoof": "issuer"})
    root.sys.enable_secrets_engine("pki", path="pki-ci")
    root.secrets.pki.generate_root("internal", "Custos CI code signing", mount_point="pki-ci")
    root.write_data("pki-ci/roles/codesign", data={
        "key_type": "ec", "allow_any_name": True, "require_cn": False, "enforce_hostnames": False,
        "server_flag": False, "client_flag": False, "code_signing_flag": True,
        "allowed_uri_sans": "https://ci.acme.example/*", "ttl": "10m", "max_ttl": "10m",
        "provenance_extensions": True})
    workflow = "https://ci.acme.example/fw/.ci/release.yml@refs/heads/main"
    claims = _claims(sub="ci-job-17", job_workflow_ref=workflow,
                     repository_url="https://git.acme.example/ran/du-firmware",
                     sha="7d2c9b1e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c", ref="refs/heads/main",
                     iss_spoof="https://evil.example")
    login = hvac.Client(url=server["url"]).auth.jwt.jwt_login(
        "builder", jwt.encode(claims, key, "ES256", headers={"kid": "ci"}), path="jwt-ci")
    assert login["auth"]["metadata"]["issuer"] == ISS, "the verified iss, not a mapped claim"
    c = _client(server, login["auth"]["client_token"])
    signer = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    r = c.write_data("pki-ci/sign/codesign", data={"csr": csr, "ttl": "10m"})
    cert = x509.load_pem_x509_certificate(r["data"]["certificate"].encode())
    assert _fulcio_extensions(cert) == {
        8: ISS, 9: workflow, 12: "https://git.acme.example/ran/du-firmware",
        13: "7d2c9b1e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c", 14: "refs/heads/main"}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [workflow]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]
    # Another builder identity than the token proves: refused, nothing issued.
    with pytest.raises(hvac.exceptions.InvalidRequest, match="build_signer_uri"):
        c.write_data("pki-ci/sign/codesign",
                     data={"csr": csr, "uri_sans": "https://ci.acme.example/other.yml@refs/heads/main"})
