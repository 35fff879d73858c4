"""Who is who: principals (people) and their roles from the config, and the chat accounts that act for them.

An account is bound to a principal either by the config (a principal's chat token) or by linking: an admin issues a
one-time link token (`herald identity link alice`), and the account sends `/link TOKEN`, which is redeemed as the
command is journaled (engine/intake/secrets.py), so the token itself is never stored. Links live in the
`linked_accounts` table, looked up on every command, so `herald identity unlink` takes effect at once.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from datetime import UTC, datetime
from typing import Any

from engine.core.config import Config
from engine.core.errors import AuthError
from engine.core.store import Database
from engine.security import keys

SCHEMA = """
CREATE TABLE IF NOT EXISTS linked_accounts (
    platform TEXT NOT NULL,
    account TEXT NOT NULL,
    principal TEXT NOT NULL,
    linked_at TEXT NOT NULL,
    PRIMARY KEY (platform, account)
);
"""

LINK_PURPOSE = "link"
MAX_LINK_TTL_S = 600
CONFIG_ACCOUNT_PREFIX = "config:"  # accounts bound by a chat token in the config


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def device_account(secret: str) -> str:
    """A stable account id for a chat client's own secret, without keeping the secret."""
    return "dev-" + hashlib.sha256(secret.encode()).hexdigest()[:20]


# -- synchronous table operations (engine database thread, or the CLI) -------------------------------------------


def issue_link_token(conn: sqlite3.Connection, principal: str, ttl_s: float) -> tuple[str, dict[str, Any]]:
    return keys.issue(conn, sub=principal, purpose=LINK_PURPOSE, ttl_s=min(ttl_s, MAX_LINK_TTL_S))


def redeem_link_token(
    conn: sqlite3.Connection, token: str, platform: str, account: str, known: frozenset[str]
) -> str:
    """Verify and use up a link token, bind the account to its principal, return the principal."""
    claims = keys.verify(conn, token, purpose=LINK_PURPOSE)
    if claims["sub"] not in known:
        raise AuthError(f"the token names {claims['sub']!r}, who is not in the config")
    keys.consume(conn, f"link:{claims['jti']}", int(claims["exp"]))
    conn.execute(
        "INSERT INTO linked_accounts (platform, account, principal, linked_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(platform, account) DO UPDATE SET principal = excluded.principal, linked_at = excluded.linked_at",
        (platform, account, claims["sub"], datetime.now(UTC).isoformat(timespec="seconds")),
    )
    return str(claims["sub"])


def unlink(conn: sqlite3.Connection, *, principal: str | None = None, platform: str | None = None,
           account: str | None = None) -> int:
    if principal is not None:
        return conn.execute("DELETE FROM linked_accounts WHERE principal = ?", (principal,)).rowcount
    return conn.execute("DELETE FROM linked_accounts WHERE platform = ? AND account = ?",
                        (platform, account)).rowcount


def links(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM linked_accounts ORDER BY principal, platform, account").fetchall()


class Directory:
    def __init__(self, config: Config, db: Database | None = None) -> None:
        self._db = db
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Take principals, roles and chat tokens from a new config (a reload); links stay in the database."""
        self._roles = {name: frozenset(p.roles) for name, p in config.principals.items()}
        # Accounts the config binds to people (`principals.NAME.accounts`), by (platform, account).
        self._accounts: dict[tuple[str, str], str] = {}
        self._accounts_of: dict[str, list[tuple[str, str]]] = {}
        for name, p in config.principals.items():
            for address in p.accounts:
                platform, _, account = address.partition(":")
                self._accounts[(platform, account)] = name
                self._accounts_of.setdefault(name, []).append((platform, account))
        # Keep digests, not tokens, in memory; compare in constant time.
        self._chat_tokens = [
            (_digest(token.get_secret_value()), name)
            for name, p in config.principals.items()
            for token in p.chat_tokens
        ]

    def authenticate_chat(self, token: str) -> str | None:
        """The principal whose configured chat token this is, if any."""
        digest = _digest(token)
        found = None
        for known, name in self._chat_tokens:
            if hmac.compare_digest(known, digest):
                found = name
        return found

    async def resolve(self, platform: str, account: str) -> str | None:
        """The principal an account acts for right now (config binding, else a link), or None."""
        if account.startswith(CONFIG_ACCOUNT_PREFIX):
            name = account.removeprefix(CONFIG_ACCOUNT_PREFIX)
            return name if name in self._roles else None
        configured = self._accounts.get((platform, account))
        if configured is not None:
            return configured
        if self._db is None:
            return None
        row = await self._db.call(lambda conn: conn.execute(
            "SELECT principal FROM linked_accounts WHERE platform = ? AND account = ?", (platform, account)
        ).fetchone())
        principal = row["principal"] if row else None
        return principal if principal in self._roles else None  # a principal removed from the config acts as no one

    async def accounts_of(self, principal: str) -> list[tuple[str, str]]:
        """Where a person can be reached: (platform, account) from the config and from links, config first."""
        found = list(self._accounts_of.get(principal, []))
        if self._db is not None:
            rows = await self._db.call(lambda conn: conn.execute(
                "SELECT platform, account FROM linked_accounts WHERE principal = ? ORDER BY platform, account",
                (principal,)).fetchall())
            found += [(row["platform"], row["account"]) for row in rows if (row["platform"], row["account"])
                      not in self._accounts]
        return found

    def redeem(self, conn: sqlite3.Connection, token: str, platform: str, account: str) -> str:
        """Redeem a link token for this account within the caller's transaction (intake settles `/link` inside the
        journal's, engine/intake/secrets.py); AuthError if it is invalid, expired, used or names no one."""
        if account.startswith(CONFIG_ACCOUNT_PREFIX) or (platform, account) in self._accounts:
            raise AuthError("this account is bound by the config and cannot be relinked")
        return redeem_link_token(conn, token, platform, account, frozenset(self._roles))

    def roles_of(self, principal: str | None) -> frozenset[str]:
        if principal is None:
            return frozenset()
        return self._roles.get(principal, frozenset())

    def exists(self, principal: str) -> bool:
        return principal in self._roles
