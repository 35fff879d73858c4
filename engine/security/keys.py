"""Signing keys and the tokens made with them: API tokens, one-time link tokens, signed buttons.

Keys live in the `signing_keys` table of the data folder's database, so the engine and the CLI (`herald token`,
`herald identity link`) share them. Every token names its key (`kid`); rotating adds a new current key and keeps the
old ones, so tokens signed before a rotation verify until they expire. The algorithm is pinned to HS256: a token
whose header says `none` or any other algorithm is refused.

All functions take a sqlite3 connection and are synchronous: the engine calls them on its database thread, the CLI
directly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from typing import Any

import jwt

from engine.core.errors import AuthError
from engine.core.ids import new_id

ALGORITHM = "HS256"
ISSUER = "herald"
KEY_BYTES = 32

SCHEMA = """
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY,
    secret BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS revoked_tokens (jti TEXT PRIMARY KEY, exp INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS used_tokens (jti TEXT PRIMARY KEY, exp INTEGER NOT NULL);
"""


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def current_key(conn: sqlite3.Connection) -> tuple[str, bytes]:
    """The newest key, made on first use."""
    row = conn.execute("SELECT kid, secret FROM signing_keys ORDER BY created DESC, kid DESC LIMIT 1").fetchone()
    if row is not None:
        return str(row[0]), bytes(row[1])
    return rotate(conn)


def rotate(conn: sqlite3.Connection) -> tuple[str, bytes]:
    """Add a new current key; older keys stay for verification."""
    kid, secret = new_id().lower(), secrets.token_bytes(KEY_BYTES)
    conn.execute("INSERT INTO signing_keys (kid, secret, created) VALUES (?, ?, ?)", (kid, secret, time.time()))
    return kid, secret


def retire_keys_older_than(conn: sqlite3.Connection, seconds: float) -> int:
    """Delete keys (never the current one) older than `seconds`: tokens they signed can no longer verify."""
    kid, _ = current_key(conn)
    cursor = conn.execute("DELETE FROM signing_keys WHERE created < ? AND kid != ?", (time.time() - seconds, kid))
    return cursor.rowcount


def _key(conn: sqlite3.Connection, kid: object) -> bytes:
    row = conn.execute("SELECT secret FROM signing_keys WHERE kid = ?", (str(kid),)).fetchone()
    if row is None:
        raise AuthError("token signed with an unknown key")
    return bytes(row[0])


def issue(
    conn: sqlite3.Connection, *, sub: str, purpose: str, ttl_s: float, roles: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Sign a JWT for `purpose` (its audience); return the token and its claims."""
    kid, secret = current_key(conn)
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "aud": purpose, "sub": sub, "roles": list(roles), "iat": now,
                              "exp": now + int(ttl_s), "jti": new_id(), **(extra or {})}
    return jwt.encode(claims, secret, algorithm=ALGORITHM, headers={"kid": kid}), claims


def verify(conn: sqlite3.Connection, token: str, *, purpose: str) -> dict[str, Any]:
    """Return the claims of a valid, unrevoked token for `purpose`; AuthError saying why otherwise."""
    if not token.isascii():  # a JWT is ASCII; anything else would fail as UnicodeEncodeError, not as a refusal
        raise AuthError("not a token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError("not a token") from None
    if header.get("alg") != ALGORITHM:
        raise AuthError(f"token algorithm {header.get('alg')!r} is not accepted")
    secret = _key(conn, header.get("kid"))
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], audience=purpose, issuer=ISSUER,
                            options={"require": ["exp", "iat", "jti", "sub", "aud"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidAudienceError:
        raise AuthError(f"token is not for {purpose}") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"token is invalid ({exc})") from None
    if conn.execute("SELECT 1 FROM revoked_tokens WHERE jti = ?", (claims["jti"],)).fetchone():
        raise AuthError("token was revoked")
    return claims


def revoke(conn: sqlite3.Connection, jti: str, exp: int) -> None:
    conn.execute("INSERT OR IGNORE INTO revoked_tokens (jti, exp) VALUES (?, ?)", (jti, exp))


def consume(conn: sqlite3.Connection, jti: str, exp: int) -> None:
    """Mark a single-use token or button as used; AuthError if it already was (a replay)."""
    now = int(time.time())
    conn.execute("DELETE FROM used_tokens WHERE exp < ?", (now - 60,))
    try:
        conn.execute("INSERT INTO used_tokens (jti, exp) VALUES (?, ?)", (jti, exp))
    except sqlite3.IntegrityError:
        raise AuthError("already used") from None


# -- signed values (buttons) -----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_value(conn: sqlite3.Connection, payload: dict[str, Any]) -> str:
    """`kid.payload.mac`: a compact value whose every field is covered by an HMAC-SHA256."""
    kid, secret = current_key(conn)
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(secret, f"{kid}.{body}".encode(), hashlib.sha256).digest()
    return f"{kid}.{body}.{_b64(mac)}"


def open_value(conn: sqlite3.Connection, value: str) -> dict[str, Any]:
    """Check a signed value's MAC and return its payload; AuthError if it was forged or altered."""
    try:
        kid, body, mac = value.split(".")
        secret = _key(conn, kid)
        expected = hmac.new(secret, f"{kid}.{body}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(mac)):
            raise AuthError("signature does not match")
        payload = json.loads(_unb64(body))
    except AuthError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthError(f"malformed signed value ({type(exc).__name__})") from None
    if not isinstance(payload, dict):
        raise AuthError("malformed signed value")
    return payload
