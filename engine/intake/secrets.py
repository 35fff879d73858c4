"""Secret-bearing commands are settled as they are journaled, so their secret is never stored.

`/link TOKEN` carries a one-time link token. Journaling the command as typed kept the token in the events table (and
in every backup of it); journaling it redacted would leave the runtime nothing to redeem. So the token is redeemed
at intake, inside the very transaction that journals the command: the journal row holds the command without its
token plus the outcome (`CommandData.settled`: linked to whom, or refused and why). One commit makes the link and
the journaled command durable together, before the sender's ack ("journaled before acknowledged" holds, and a link
never exists without its command on record or the other way round). The runtime then only reports the outcome
(reply and audit), and a replay after a crash reports the same outcome instead of redeeming anything twice.

A refused token changes nothing: its redemption runs inside a savepoint that is rolled back.
"""

from __future__ import annotations

import sqlite3

from engine.core.errors import AuthError
from engine.core.events import SECRET_COMMANDS, CommandData, Event, Settled
from engine.security.identity import Directory

USAGE = "Usage: /link TOKEN (the token from `herald identity link NAME`)"


class SecretIntake:
    """What the journal runs on secret-bearing commands before it stores them (engine.core.journal)."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    @staticmethod
    def needs(event: Event) -> bool:
        data = event.data
        return isinstance(data, CommandData) and data.name in SECRET_COMMANDS and bool(data.args)

    def settle(self, conn: sqlite3.Connection, event: Event) -> Event:
        """The event to journal in place of `event`: its secret redeemed (within the caller's transaction) and
        replaced by the outcome."""
        data = event.data
        assert isinstance(data, CommandData)
        if event.actor is None or len(data.args) != 1:
            settled = Settled(ok=False, reason=USAGE)
        else:
            settled = self._link(conn, data.args[0], event.actor.platform, event.actor.account)
        return event.model_copy(update={"data": data.redacted(settled)})

    def _link(self, conn: sqlite3.Connection, token: str, platform: str, account: str) -> Settled:
        conn.execute("SAVEPOINT link")
        try:
            principal = self._directory.redeem(conn, token, platform, account)
        except BaseException as exc:
            conn.execute("ROLLBACK TO link")  # a refused token leaves nothing behind (consume may have run)
            conn.execute("RELEASE link")
            if isinstance(exc, AuthError):
                return Settled(ok=False, reason=str(exc))
            raise
        conn.execute("RELEASE link")
        return Settled(ok=True, principal=principal)
