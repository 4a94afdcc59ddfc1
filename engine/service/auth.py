"""JWT bearer verification of CDS Hooks calls (CDS Hooks 2.0, "Trusting CDS Clients").

A CDS Client signs a short-lived JWT: header `alg` ES384 or RS384 and `kid`; claims `iss`,
`aud` (the service endpoint's URL), `exp`, `iat` and `jti`. Only issuers on the allow-list are
trusted, each with its own JWKS (a URL fetched and cached by PyJWT, or a local file). A `jti`
is accepted once: a bounded cache remembers it until its token expires, and a token may live at
most MAX_LIFETIME so the cache stays bounded; when it is full of live tokens, new calls are
refused (503) rather than a seen jti being forgotten.

Nothing here logs or echoes a token or a claim: refusals name the reason only.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jwt

ALGORITHMS = ("ES384", "RS384")  # what CDS Hooks 2.0 requires a service to support
MAX_LIFETIME = 600  # seconds a token may live (exp - iat); the spec recommends 5 minutes
LEEWAY = 30  # seconds of clock skew allowed on exp and iat
REPLAY_CACHE = 100_000  # jti remembered at most (each until its token expires)
MAX_TOKEN = 16_384  # bytes of an Authorization header read at most
# The public CDS Hooks sandbox (https://sandbox.cds-hooks.org) signs with a key whose private
# half is published in its repository, so anyone can sign as it: trusted in --dev mode only.
# cds-hooks-sandbox-jwks.json is the public half of keys/jwk-keypair.json in
# github.com/cds-hooks/sandbox (kid 44823f3d-..., P-384, ES384).
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"


class AuthError(Exception):
    """A call that is not authenticated: `status` 401 (or 503 when the replay cache is full)."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def sandbox_jwks() -> str:
    """The public half of the CDS Hooks sandbox's signing key (a JWKS, bundled)."""
    return resources.files("engine.service").joinpath("cds-hooks-sandbox-jwks.json").read_text()


KEY_ALGORITHMS = {"EC": "ES384", "RSA": "RS384"}  # JWK kty -> the one algorithm accepted


@dataclass
class _Issuer:
    """One trusted issuer: its keys from a JWKS file (read once) or URL (fetched, cached)."""

    source: str
    algorithms: tuple[str, ...] = ALGORITHMS
    _keys: jwt.PyJWKSet | None = None
    _client: jwt.PyJWKClient | None = None

    def __post_init__(self) -> None:
        if self.source.startswith(("https://", "http://")):
            self._client = jwt.PyJWKClient(self.source, cache_keys=True, lifespan=300, timeout=5)
        else:
            self._keys = jwt.PyJWKSet.from_json(self.source)

    @property
    def remote(self) -> bool:
        return self._client is not None

    def key(self, kid: str | None) -> jwt.PyJWK:
        try:
            if self._client is not None:
                if kid is None:
                    raise AuthError("the token has no kid")
                return self._client.get_signing_key(kid)
            assert self._keys is not None  # noqa: S101  # set in __post_init__
            keys = [k for k in self._keys.keys if kid is None or k.key_id == kid]
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):  # a fetch failed or no usable key
            raise AuthError("no key of the issuer matches the token's kid") from None
        if len(keys) != 1:
            raise AuthError("no key of the issuer matches the token's kid")
        return keys[0]


def read_jwks(source: str) -> str:
    """A JWKS URL as given, or the text of a local JWKS file (checked now, not at first call)."""
    if source.startswith(("https://", "http://")):
        return source
    text = Path(source).read_text(encoding="utf-8")
    try:
        jwt.PyJWKSet.from_json(text)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise ValueError(f"{source}: not a JSON Web Key Set with usable keys") from None
    return text


@dataclass
class ReplayCache:
    """jti values seen, each kept until its token's exp; bounded."""

    limit: int = REPLAY_CACHE
    _seen: OrderedDict[tuple[str, str], float] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check_and_add(self, issuer: str, jti: str, exp: float) -> None:
        now = time.time()
        with self._lock:
            while self._seen:  # forget expired ones (kept in order of arrival)
                oldest, until = next(iter(self._seen.items()))
                if until + LEEWAY >= now:
                    break
                del self._seen[oldest]
            if (issuer, jti) in self._seen:
                raise AuthError("the token was already used (jti replayed)")
            if len(self._seen) >= self.limit:  # a full scan, only when full
                for key in [k for k, until in self._seen.items() if until + LEEWAY < now]:
                    del self._seen[key]
            if len(self._seen) >= self.limit:
                raise AuthError("too many live tokens; try again shortly", status=503)
            self._seen[(issuer, jti)] = exp


class Verifier:
    """Checks the bearer token of a CDS Hooks call against the trusted issuers."""

    def __init__(
        self,
        issuers: Mapping[str, str],
        *,
        dev: bool = False,
        audiences: Iterable[str] = (),
        replay_limit: int = REPLAY_CACHE,
    ) -> None:
        self.dev = dev
        self.audiences = tuple(audiences)
        self.issuers = {iss: _Issuer(source) for iss, source in issuers.items()}
        if dev and SANDBOX_ISSUER not in self.issuers:
            # the sandbox's own algorithm is ES384 in its published key set
            self.issuers[SANDBOX_ISSUER] = _Issuer(sandbox_jwks())
        self.replay = ReplayCache(replay_limit)

    @property
    def fetches(self) -> bool:
        """Whether checking a token may fetch an issuer's JWKS over the network."""
        return any(issuer.remote for issuer in self.issuers.values())

    @property
    def enabled(self) -> bool:
        """Whether any call can be authenticated at all (else every call is refused)."""
        return bool(self.issuers)

    def check(self, authorization: str | None, endpoint_url: str) -> dict[str, Any] | None:
        """The verified claims of the call, or None for an unauthenticated call in dev mode.

        `endpoint_url` is the URL the call was made to, the token's expected `aud` unless
        audiences were configured. Raises AuthError.
        """
        if not authorization:
            if self.dev:
                return None
            raise AuthError("a bearer token is required")
        if len(authorization) > MAX_TOKEN:
            raise AuthError("the Authorization header is too long")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("the Authorization header must be 'Bearer <JWT>'")
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthError("the bearer token is not a well-formed JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise AuthError("the token's alg must be ES384 or RS384")
        issuer_name = unverified.get("iss") if isinstance(unverified, dict) else None
        if not isinstance(issuer_name, str) or issuer_name not in self.issuers:
            raise AuthError("the token's issuer is not trusted by this service")
        kid = header.get("kid")
        key = self.issuers[issuer_name].key(kid if isinstance(kid, str) else None)
        # the one algorithm this key's type can verify: an RS384 token naming an EC key (or the
        # other way round) is refused here, not by a TypeError deep inside PyJWT
        algorithm = KEY_ALGORITHMS.get(key.key_type or "")
        if algorithm is None or header.get("alg") != algorithm:
            raise AuthError("the token's alg does not match the issuer's key")
        audiences = self.audiences or (endpoint_url,)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,  # the key itself: a JWK without "alg" would default RSA to RS256
                algorithms=[algorithm],
                audience=list(audiences),
                issuer=issuer_name,
                leeway=LEEWAY,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError("the token's aud is not this service's URL") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"the token lacks the {exc.claim} claim") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthError("the token's signature or claims are not valid") from None
        exp, iat, jti = claims["exp"], claims["iat"], claims["jti"]
        if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in (exp, iat)):
            raise AuthError("the token's exp and iat must be numbers")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise AuthError("the token's jti must be a non-empty string")
        if exp - iat > MAX_LIFETIME:
            raise AuthError(f"the token lives longer than {MAX_LIFETIME // 60} minutes")
        self.replay.check_and_add(issuer_name, jti, float(exp))
        return claims
