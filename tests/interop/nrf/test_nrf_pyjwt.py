"""An NRF access token judged by PyJWT: the ES256 signature verifies with the published JWKS
(selected by kid), and every TS 33.501 13.4.1 claim is what the request and the certificate
say. The NF stand-ins are requests with SBA client certificates over mutual TLS."""
import time

import jwt
import requests

from conftest import AMF_ID, NRF_ID, SMF_ID


def test_pyjwt_verifies_the_token_with_the_jwks_and_every_claim_matches(nrf):
    amf, smf = nrf.cert("AMF", AMF_ID), nrf.cert("SMF", SMF_ID)
    nrf.register(amf, AMF_ID, "AMF")
    nrf.register(smf, SMF_ID, "SMF", {"nfServices": [{
        "serviceInstanceId": "1", "serviceName": "nsmf-pdusession",
        "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.0.0"}],
        "scheme": "https", "nfServiceStatus": "REGISTERED"}]})
    form = {"grant_type": "client_credentials", "nfInstanceId": AMF_ID, "nfType": "AMF",
            "targetNfType": "SMF", "scope": "nsmf-pdusession"}
    r = requests.post(nrf.url("/oauth2/token"), data=form, cert=amf, verify=nrf.ca)
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    token = body["access_token"]

    jwks = requests.get(nrf.url("/oauth2/jwks"), cert=smf, verify=nrf.ca).json()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and "kid" in header and "jwk" not in header
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(token, key=key.key, algorithms=["ES256"], audience="SMF", issuer=NRF_ID,
                        options={"require": ["iss", "sub", "aud", "scope", "exp"]})
    assert claims["sub"] == AMF_ID
    assert claims["scope"] == "nsmf-pdusession"
    assert claims["aud"] == "SMF"
    assert 0 < claims["exp"] - time.time() <= 600

    # PyJWT refuses the same token for another audience or issuer, and when tampered with.
    import pytest
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key=key.key, algorithms=["ES256"], audience="UDM")
    with pytest.raises(jwt.InvalidIssuerError):
        jwt.decode(token, key=key.key, algorithms=["ES256"], audience="SMF", issuer="someone-else")
    h, p, s = token.split(".")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{h}.{p[:-2]}AA.{s}", key=key.key, algorithms=["ES256"], audience="SMF")
