"""Authentication of every entry point (DESIGN.md, "Authentication (on by default)").

Small checks that raise ``AuthError``; the routes turn it into a 401/403 or a websocket close 1008, count it in
``switchboard_auth_refused_total{entry,reason}`` and log it once, never with the credential. Nothing here knows
FastAPI: the callers pass headers, URLs and form fields in.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from twilio.request_validator import RequestValidator, get_signature_algorithm

from ingress.settings import IngressSettings
from switchboard import metrics

logger = logging.getLogger(__name__)

TWILIO_SIGNATURE = "x-twilio-signature"
TWILIO_SIGNATURE_SETTINGS = "x-twilio-webhooks-signature-settings"
STREAM_TOKEN = "stream"  # purposes: a token minted for one use is refused for the other
SESSION_TOKEN = "session"
ENGINES_SCOPE = "engines"


class AuthError(Exception):
    """A refused credential: ``reason`` is short, safe to show the caller and to use as a metric label."""

    def __init__(self, reason: str, detail: str = "", status: int = 401) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason.replace("_", " ")
        self.status = status  # over HTTP: 401 (no or a wrong credential), 403 (Twilio signature, not allowed)


def refused(entry: str, exc: AuthError, client: str = "") -> None:
    """Count and log one refusal (the credential itself is never logged)."""
    metrics.AUTH_REFUSED.labels(entry, exc.reason).inc()
    logger.warning("refused", extra={"fields": {"entry": entry, "reason": exc.reason, "client": client}})


async def refuse_socket(ws: Any, entry: str, exc: AuthError) -> None:
    """Refuse a websocket: accept, then close 1008 (policy violation) with the short reason, so clients see why."""
    client = ws.client.host if ws.client else ""
    refused(entry, exc, client)
    await ws.accept()
    await ws.close(1008, exc.detail[:120])


def bearer(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (empty when absent)."""
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison; hashing first hides the expected length too."""
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


def fingerprint(secret: str) -> str:
    """A name for a key in logs: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


# -- signed short-lived tokens (Twilio stream token, JSON API session token) --------------------------------------


def _mac(secret: bytes, purpose: str, subject: str, exp: int) -> str:
    digest = hmac.new(secret, f"{purpose}\n{subject}\n{exp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mint(secret: bytes, purpose: str, subject: str, ttl_s: float, now: float | None = None) -> str:
    """``<expiry>.<HMAC-SHA256(purpose, subject, expiry)>``: bound to one call or session, one use, an expiry."""
    exp = int((time.time() if now is None else now) + ttl_s)
    return f"{exp}.{_mac(secret, purpose, subject, exp)}"


def verify(secret: bytes, purpose: str, subject: str, token: str | None, now: float | None = None) -> None:
    if not token:
        raise AuthError("missing_token", "no token")
    exp_text, _, mac = token.partition(".")
    if not exp_text.isdigit() or len(exp_text) > 12:
        raise AuthError("invalid_token", "malformed token")
    exp = int(exp_text)
    if not hmac.compare_digest(mac.encode(), _mac(secret, purpose, subject, exp).encode()):
        raise AuthError("invalid_token", "token not valid for this call")
    if exp < (time.time() if now is None else now):
        raise AuthError("expired_token", "token expired")


# -- API keys -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiKey:
    fingerprint: str
    may_choose_engines: bool  # the key may pick engines per call (cloud engines cost money)


class ApiKeys:
    """``SWITCHBOARD_API_KEYS``: ``key[:engines],...`` or the path of a file with one such entry a line."""

    def __init__(self, entries: list[tuple[str, bool]]) -> None:
        self._keys = entries

    @classmethod
    def parse(cls, value: str) -> ApiKeys:
        value = value.strip()
        if value.startswith(("/", "./", "~")):
            path = Path(value).expanduser()
            if not path.is_file():
                raise ValueError(f"SWITCHBOARD_API_KEYS names {path}, which is not a readable file")
            lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
            items = [ln for ln in lines if ln]
        else:
            items = [item.strip() for item in value.split(",") if item.strip()]
        entries = []
        for item in items:
            key, _, scope = item.partition(":")
            if len(key) < 16:
                raise ValueError(f"an API key in SWITCHBOARD_API_KEYS is under 16 characters ({fingerprint(key)})")
            if scope not in ("", ENGINES_SCOPE):
                raise ValueError(f"unknown API key scope {scope!r} (only {ENGINES_SCOPE!r})")
            entries.append((key, scope == ENGINES_SCOPE))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, given: str) -> ApiKey:
        if not given:
            raise AuthError("missing_credentials", "Authorization: Bearer <API key> required")
        match: ApiKey | None = None
        for key, engines in self._keys:  # every key is compared: the time does not tell which one matched
            if same_secret(given, key):
                match = ApiKey(fingerprint(key), engines)
        if match is None:
            raise AuthError("invalid_credentials", "invalid API key")
        return match


# -- Twilio ---------------------------------------------------------------------------------------------------------


def twilio_signature_ok(auth_token: str, url: str, params: Any, headers: Mapping[str, str]) -> None:
    """``X-Twilio-Signature`` over the full URL and the (sorted) form params, checked by the twilio package."""
    signature = headers.get(TWILIO_SIGNATURE)
    if not signature:
        raise AuthError("missing_signature", "X-Twilio-Signature required", 403)
    algorithm = get_signature_algorithm(headers.get(TWILIO_SIGNATURE_SETTINGS))
    if not RequestValidator(auth_token).validate(url, params, signature, algorithm):
        raise AuthError("invalid_signature", "X-Twilio-Signature does not match", 403)


# -- ACS ------------------------------------------------------------------------------------------------------------


class AcsVerifier:
    """RS256 JWTs from ACS: audience (the resource's immutable ID), issuer, keys from a JWKS URL or file."""

    def __init__(self, audience: str, issuer: str, jwks: str) -> None:
        self.audience, self.issuer = audience, issuer
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if jwks.startswith("https://"):
            self._client = jwt.PyJWKClient(jwks, cache_keys=True, lifespan=3600, timeout=5)
        elif jwks.startswith(("http://", "ws://")):
            raise ValueError("SWITCHBOARD_ACS_JWKS must be an https:// URL or a file path")
        else:
            path = Path(jwks).expanduser()
            try:
                self._keys = jwt.PyJWKSet.from_json(path.read_text())
            except (OSError, jwt.PyJWTError, ValueError) as exc:
                raise ValueError(f"SWITCHBOARD_ACS_JWKS: cannot read a JWKS from {path}: {exc}") from exc

    async def _key(self, token: str) -> Any:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != "RS256":
            raise AuthError("invalid_token", "token not signed with RS256")
        if self._client is not None:  # urllib underneath: off the event loop; the keys are cached
            return (await asyncio.to_thread(self._client.get_signing_key_from_jwt, token)).key
        assert self._keys is not None
        kid = header.get("kid")
        keys = [k for k in self._keys.keys if kid is None or k.key_id == kid]
        if not keys:
            raise AuthError("invalid_token", "unknown signing key")
        return keys[0].key

    async def check(self, token: str) -> dict[str, Any]:
        if not token:
            raise AuthError("missing_credentials", "Authorization: Bearer <JWT> required")
        try:
            key = await self._key(token)
            return jwt.decode(token, key, algorithms=["RS256"], audience=self.audience, issuer=self.issuer,
                              options={"require": ["exp", "aud", "iss"]}, leeway=30)
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("expired_token", "token expired") from exc
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            raise AuthError("wrong_audience", "token not issued for this resource") from exc
        except jwt.PyJWKClientConnectionError as exc:  # our side: the JWKS URL is unreachable (counted apart)
            raise AuthError("keys_unavailable", "signing keys unavailable, try again") from exc
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:  # bad signature, malformed, unreachable keys
            raise AuthError("invalid_token", "invalid token") from exc


# -- everything one ingress node checks -----------------------------------------------------------------------------


class Authenticator:
    """The credentials of one ingress node, built once from its settings."""

    def __init__(self, settings: IngressSettings) -> None:
        self.enabled = settings.auth == "on"
        self.ttl_s = settings.token_ttl_s
        self.twilio_token = settings.twilio_auth_token.get_secret_value()
        self.metrics_token = settings.metrics_token.get_secret_value()
        # one random secret per process works for a lone node; nodes behind one load balancer must share one
        self.token_secret = settings.token_secret.get_secret_value().encode() or secrets.token_bytes(32)
        self.api_keys = ApiKeys.parse(settings.api_keys.get_secret_value())
        self.acs = (AcsVerifier(settings.acs_audience, settings.acs_issuer, settings.acs_jwks)
                    if settings.acs_audience and settings.acs_jwks else None)

    def unconfigured(self) -> list[str]:
        """Entry points that refuse everyone because their credential is not set."""
        missing = {"SWITCHBOARD_TWILIO_AUTH_TOKEN": not self.twilio_token, "SWITCHBOARD_API_KEYS": not self.api_keys,
                   "SWITCHBOARD_ACS_AUDIENCE / SWITCHBOARD_ACS_JWKS": self.acs is None,
                   "SWITCHBOARD_METRICS_TOKEN": not self.metrics_token}
        return [name for name, unset in missing.items() if unset]

    def twilio(self, url: str, params: Any, headers: Mapping[str, str]) -> None:
        if not self.enabled:
            return
        if not self.twilio_token:
            raise AuthError("not_configured", "Twilio is not configured on this node", 403)
        twilio_signature_ok(self.twilio_token, url, params, headers)

    def stream_token(self, call_sid: str) -> str:
        return mint(self.token_secret, STREAM_TOKEN, call_sid, self.ttl_s)

    def check_stream_token(self, call_sid: str, token: str | None) -> None:
        if self.enabled:
            verify(self.token_secret, STREAM_TOKEN, call_sid, token)

    async def acs_upgrade(self, headers: Mapping[str, str]) -> None:
        if not self.enabled:
            return
        if self.acs is None:
            raise AuthError("not_configured", "ACS is not configured on this node")
        await self.acs.check(bearer(headers))

    def api_key(self, headers: Mapping[str, str], query_token: str = "") -> ApiKey:
        """The caller's API key (``Authorization: Bearer``, or ``?token=`` where a browser cannot set headers)."""
        if not self.enabled:
            return ApiKey("auth-off", True)
        return self.api_keys.check(bearer(headers) or query_token)

    def session_token(self, session_id: str) -> str:
        return mint(self.token_secret, SESSION_TOKEN, session_id, self.ttl_s)

    def check_session_token(self, session_id: str, token: str | None) -> None:
        if self.enabled:
            verify(self.token_secret, SESSION_TOKEN, session_id, token)

    def metrics(self, headers: Mapping[str, str]) -> None:
        if not self.enabled:
            return
        if not self.metrics_token:
            raise AuthError("not_configured", "/metrics is not served on this port: set SWITCHBOARD_METRICS_TOKEN "
                            "or scrape SWITCHBOARD_METRICS_PORT")
        given = bearer(headers)
        if not given:
            raise AuthError("missing_credentials", "Authorization: Bearer <metrics token> required")
        if not same_secret(given, self.metrics_token):
            raise AuthError("invalid_credentials", "invalid metrics token")
