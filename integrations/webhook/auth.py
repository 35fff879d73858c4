"""Authenticating webhook senders, per source: a bearer token, or an HMAC-SHA256 signature with a timestamp.

Herald's signature scheme (for senders that can sign): header `X-Herald-Timestamp: <unix seconds>` and
`X-Herald-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`. A source that signs its own way
has its own `SignatureScheme` (Grafana: `X-Grafana-Alerting-Timestamp` and `X-Grafana-Alerting-Signature: <hex
HMAC-SHA256(secret, "<timestamp>:<raw body>")>`). A timestamp outside the replay window is refused, and so is a
signature already accepted inside it (integrations/webhook/replay.py keeps those). With nothing configured, only
loopback may post.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from engine.plugin import HeraldError, UnreadableInput, ascii_header

TIMESTAMP_HEADER = "X-Herald-Timestamp"
SIGNATURE_HEADER = "X-Herald-Signature"


@dataclass(frozen=True)
class SignatureScheme:
    """Where a sender puts its timestamp and signature, and how it joins timestamp and body before signing."""

    timestamp_header: str = TIMESTAMP_HEADER
    signature_header: str = SIGNATURE_HEADER
    separator: bytes = b"."
    prefix: str = "sha256="  # before the hex digest in the signature header

    def sign(self, secret: str, timestamp: int, body: bytes) -> str:
        mac = hmac.new(secret.encode(), str(timestamp).encode() + self.separator + body, hashlib.sha256).hexdigest()
        return self.prefix + mac


HERALD_SIGNATURE = SignatureScheme()
# Grafana's webhook contact point, with HMAC signing on and its Timestamp Header set to this name (Grafana signs
# without a timestamp when none is set, which could be replayed forever: refused here as a missing header).
GRAFANA_SIGNATURE = SignatureScheme(timestamp_header="X-Grafana-Alerting-Timestamp",
                                    signature_header="X-Grafana-Alerting-Signature", separator=b":", prefix="")


class SourceAuth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bearer_token: SecretStr | None = Field(default=None, min_length=16)
    hmac_secret: SecretStr | None = Field(default=None, min_length=16)
    replay_window_s: int = Field(default=300, ge=1, le=3600)


@dataclass(frozen=True)
class Signed:
    """A request whose signature verified: the signature, and until when a replay of it must be refused."""

    signature: str
    until: float


class Refused(HeraldError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value a sender computes (also used by tests and `herald send`)."""
    return HERALD_SIGNATURE.sign(secret, timestamp, body)


class Authenticator:
    def __init__(self, auth: SourceAuth, *, allow_loopback: bool, scheme: SignatureScheme = HERALD_SIGNATURE) -> None:
        self._auth = auth
        self._allow_loopback = allow_loopback
        self._scheme = scheme

    @property
    def needs_body(self) -> bool:
        return self._auth.hmac_secret is not None

    def check_headers(self, headers: Mapping[str, str], peer: str | None) -> None:
        """Everything that can be decided before reading the body; raises Refused."""
        auth = self._auth
        if auth.bearer_token is not None:
            supplied = _header(headers, "Authorization") or ""
            if not supplied.startswith("Bearer "):
                raise Refused(401, "missing bearer token (Authorization: Bearer ...)")
            if not hmac.compare_digest(supplied.removeprefix("Bearer ").encode(),
                                       auth.bearer_token.get_secret_value().encode()):
                raise Refused(403, "wrong bearer token")
        elif auth.hmac_secret is None and not (self._allow_loopback and _is_loopback(peer)):
            raise Refused(401, "webhook authentication is not configured for this source, so only this machine "
                               "may post: set a bearer_token or hmac_secret under [integrations.webhook]")

    def check_body(self, headers: Mapping[str, str], body: bytes) -> Signed | None:
        """The HMAC signature and the timestamp's window; raises Refused. Returns what the replay guard keeps
        (integrations/webhook/replay.py), or None when this source does not sign."""
        secret = self._auth.hmac_secret
        if secret is None:
            return None
        scheme = self._scheme
        stamp, signature = _header(headers, scheme.timestamp_header), _header(headers, scheme.signature_header)
        if not stamp or not signature:
            raise Refused(401, f"missing {scheme.timestamp_header} or {scheme.signature_header} header")
        try:
            timestamp = int(stamp)
        except ValueError:
            raise Refused(403, f"{scheme.timestamp_header} is not a unix time in seconds") from None
        now = time.time()
        window = self._auth.replay_window_s
        if abs(now - timestamp) > window:
            raise Refused(403, f"timestamp outside the {window} s replay window")
        expected = scheme.sign(secret.get_secret_value(), timestamp, body)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise Refused(403, "signature does not match the body")
        # Refused as too old from timestamp + window on, so it needs remembering until then.
        return Signed(signature, timestamp + window)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    try:
        return ascii_header(headers, name)
    except UnreadableInput as exc:
        raise Refused(400, str(exc)) from None


@functools.lru_cache(maxsize=256)  # asked on every unauthenticated request; parsing an address is not free
def _is_loopback(peer: str | None) -> bool:
    if not peer:
        return False
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False
