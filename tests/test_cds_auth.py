"""CDS Hooks JWT bearer verification (issue 19 item 4, security): keys made here, ES384 and
RS384 accepted, everything else refused with a 401 OperationOutcome that names no token."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from engine.screener import Screener
from engine.service.app import ServiceConfig, create_app
from engine.service.auth import SANDBOX_ISSUER, AuthError, Verifier, read_jwks
from tests.cds_requests import request_of
from tests.conftest import RULESET

ROOT = Path(__file__).resolve().parent.parent
DISC = ROOT / "cases" / "fhir" / "disc-herniation-l4-l5.json"
ISS = "https://ehr.example.org"
BASE = "http://testserver"
PATH = "/cds-services/miss-screen"
EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = ec.generate_private_key(ec.SECP384R1())


def jwks(*pairs: tuple[str, Any]) -> str:
    keys = []
    for kid, key in pairs:
        algorithm = ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
        jwk = json.loads(algorithm.to_jwk(key.public_key()))
        jwk["kid"] = kid
        keys.append(jwk)
    return json.dumps({"keys": keys})


JWKS = jwks(("ec", EC_KEY), ("rsa", RSA_KEY))


def token(
    key: Any = EC_KEY,
    alg: str = "ES384",
    kid: str = "ec",
    **claims: Any,
) -> str:
    now = int(time.time())
    payload = {
        "iss": ISS,
        "sub": "client-1",
        "aud": BASE + PATH,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="module")
def secured() -> TestClient:
    screener = Screener.from_ruleset(RULESET)
    return TestClient(create_app(ServiceConfig(screener=screener, trusted_issuers={ISS: JWKS})))


def call(test_client: TestClient, bearer: str | None) -> Any:
    headers = {"Authorization": bearer} if bearer is not None else {}
    return test_client.post(PATH, json=request_of(json.loads(DISC.read_text())), headers=headers)


def refused(response: Any, status: int = 401) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    diagnostics: str = body["issue"][0]["diagnostics"]
    return diagnostics


@pytest.mark.parametrize(
    ("key", "alg", "kid"), [(EC_KEY, "ES384", "ec"), (RSA_KEY, "RS384", "rsa")]
)
def test_es384_and_rs384_tokens_of_a_trusted_issuer_are_accepted(
    secured: TestClient, key: Any, alg: str, kid: str
) -> None:
    response = call(secured, f"Bearer {token(key, alg, kid)}")
    assert response.status_code == 200, response.text
    assert len(response.json()["cards"]) == 1


def test_no_token_is_refused_without_dev(secured: TestClient) -> None:
    refused(call(secured, None))
    refused(call(secured, "Basic dXNlcjpwYXNz"))
    refused(call(secured, "Bearer not.a.jwt"))


def test_hs256_and_none_are_refused(secured: TestClient) -> None:
    hs = jwt.encode(
        {
            "iss": ISS,
            "aud": BASE + PATH,
            "exp": int(time.time()) + 300,
            "iat": int(time.time()),
            "jti": "a",
        },
        "a-shared-secret-of-at-least-32-bytes",
        algorithm="HS256",
        headers={"kid": "ec"},
    )
    assert "ES384 or RS384" in refused(call(secured, f"Bearer {hs}"))
    unsigned = jwt.encode(
        {"iss": ISS, "aud": BASE + PATH, "exp": int(time.time()) + 300, "jti": "b"},
        None,
        algorithm="none",
    )
    refused(call(secured, f"Bearer {unsigned}"))
    es256 = token(ec.generate_private_key(ec.SECP256R1()), "ES256")
    refused(call(secured, f"Bearer {es256}"))


def test_wrong_audience_is_refused(secured: TestClient) -> None:
    assert "aud" in refused(
        call(secured, f"Bearer {token(aud='https://other.example/cds-services/x')}")
    )
    refused(call(secured, f"Bearer {token(aud=BASE + '/cds-services/miss-screen-order-sign')}"))


def test_expired_tokens_and_long_lived_ones_are_refused(secured: TestClient) -> None:
    now = int(time.time())
    assert "expired" in refused(call(secured, f"Bearer {token(iat=now - 900, exp=now - 600)}"))
    assert "longer" in refused(call(secured, f"Bearer {token(exp=now + 3600)}"))


def test_missing_claims_are_refused(secured: TestClient) -> None:
    for claim in ("exp", "jti", "aud", "iat"):
        refused(call(secured, f"Bearer {token(**{claim: None})}"))


def test_a_replayed_jti_is_refused(secured: TestClient) -> None:
    once = token()
    assert call(secured, f"Bearer {once}").status_code == 200
    assert "replayed" in refused(call(secured, f"Bearer {once}"))


def test_an_issuer_not_allow_listed_is_refused(secured: TestClient) -> None:
    assert "not trusted" in refused(call(secured, f"Bearer {token(iss='https://evil.example')}"))
    assert "not trusted" in refused(call(secured, f"Bearer {token(iss=SANDBOX_ISSUER)}"))


def test_a_key_not_in_the_issuers_jwks_is_refused(secured: TestClient) -> None:
    refused(call(secured, f"Bearer {token(OTHER_KEY)}"))  # kid "ec", another key: bad signature
    refused(call(secured, f"Bearer {token(OTHER_KEY, kid='unknown')}"))


def test_refusals_never_echo_the_token(
    secured: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    bad = token(aud="https://other.example/")
    response = call(secured, f"Bearer {bad}")
    refused(response)
    for part in bad.split("."):
        assert part not in response.text
        assert part not in caplog.text


def test_feedback_needs_a_token_too(secured: TestClient) -> None:
    card = call(secured, f"Bearer {token()}").json()["cards"][0]
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "accepted"}]}
    refused(secured.post(PATH + "/feedback", json=feedback))
    ok = secured.post(
        PATH + "/feedback",
        json=feedback,
        headers={"Authorization": f"Bearer {token(aud=BASE + PATH + '/feedback')}"},
    )
    assert ok.status_code == 200


def test_the_configured_audience_replaces_the_url() -> None:
    screener = Screener.from_ruleset(RULESET)
    app = create_app(
        ServiceConfig(
            screener=screener,
            trusted_issuers={ISS: JWKS},
            audiences=("https://cds.example.org/cds-services/miss-screen",),
        )
    )
    test_client = TestClient(app)
    refused(call(test_client, f"Bearer {token()}"))  # the URL called is no longer accepted
    good = token(aud="https://cds.example.org/cds-services/miss-screen")
    assert call(test_client, f"Bearer {good}").status_code == 200


def test_without_dev_or_issuers_every_call_is_refused() -> None:
    test_client = TestClient(create_app(ServiceConfig(screener=Screener.from_ruleset(RULESET))))
    refused(call(test_client, None))
    refused(call(test_client, f"Bearer {token()}"))


def test_dev_accepts_unauthenticated_calls_and_trusts_the_sandbox_only_in_dev() -> None:
    test_client = TestClient(
        create_app(ServiceConfig(screener=Screener.from_ruleset(RULESET), dev=True))
    )
    assert call(test_client, None).status_code == 200
    refused(call(test_client, f"Bearer {token()}"))  # a token present is still verified
    assert SANDBOX_ISSUER in Verifier({}, dev=True).issuers
    assert SANDBOX_ISSUER not in Verifier({ISS: JWKS}).issuers


def test_the_replay_cache_is_bounded_and_refuses_when_full() -> None:
    verifier = Verifier({ISS: JWKS}, replay_limit=2)
    url = BASE + PATH
    verifier.check(f"Bearer {token()}", url)
    verifier.check(f"Bearer {token()}", url)
    with pytest.raises(AuthError) as full:
        verifier.check(f"Bearer {token()}", url)
    assert full.value.status == 503
    now = int(time.time())
    expired = Verifier({ISS: JWKS}, replay_limit=1)
    expired.replay._seen[(ISS, "old")] = now - 3600  # an expired entry is dropped when full
    expired.check(f"Bearer {token()}", url)
    assert (ISS, "old") not in expired.replay._seen


def test_read_jwks_checks_a_file_at_once(tmp_path: Path) -> None:
    good = tmp_path / "jwks.json"
    good.write_text(JWKS)
    assert read_jwks(str(good)) == JWKS
    bad = tmp_path / "bad.json"
    bad.write_text('{"keys": []}')
    with pytest.raises(ValueError, match="JSON Web Key Set"):
        read_jwks(str(bad))
    assert read_jwks("https://ehr.example.org/jwks.json") == "https://ehr.example.org/jwks.json"


def _forged(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A token with any header and claims and a signature that is not one."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}.AAAA"


def test_an_alg_that_does_not_match_the_keys_type_is_a_401_not_a_500(secured: TestClient) -> None:
    """RS384 naming the EC key (or ES384 naming the RSA key) once made PyJWT raise TypeError."""
    now = int(time.time())
    claims = {"iss": ISS, "aud": BASE + PATH, "iat": now, "exp": now + 300, "jti": "x"}
    for alg, kid in (("RS384", "ec"), ("ES384", "rsa")):
        forged = _forged({"alg": alg, "kid": kid}, claims)
        assert "alg" in refused(call(secured, f"Bearer {forged}"))
    # a real signature by the RSA key, presented under the EC key's kid
    assert "alg" in refused(call(secured, f"Bearer {token(RSA_KEY, 'RS384', 'ec')}"))


def test_exp_and_iat_given_as_strings_are_a_401_not_a_500(secured: TestClient) -> None:
    now = int(time.time())
    bad = token(iat=str(now), exp=str(now + 300))
    refused(call(secured, f"Bearer {bad}"))


def test_an_issuer_whose_key_set_is_unusable_is_a_401() -> None:
    """A JWKS URL that answers with no usable key: the call is refused, never a 500."""
    verifier = Verifier({ISS: "http://127.0.0.1:9/jwks.json"})  # nothing listens on port 9
    with pytest.raises(AuthError):
        verifier.check(f"Bearer {token()}", BASE + PATH)


def test_cds_responses_are_never_cached(secured: TestClient) -> None:
    response = call(secured, f"Bearer {token()}")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    refusal = call(secured, None)
    refused(refusal)
    assert refusal.headers["cache-control"] == "no-store"
