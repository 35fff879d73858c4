"""Who is who: principals (people), their roles, and the chat tokens that authenticate them.

For now everything comes from the config; account linking across platforms comes with the security work.
"""

from __future__ import annotations

import hashlib
import hmac

from engine.config import Config


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Directory:
    def __init__(self, config: Config) -> None:
        self._roles = {name: frozenset(p.roles) for name, p in config.principals.items()}
        # Keep digests, not tokens, in memory; compare in constant time.
        self._chat_tokens = [
            (_token_digest(token.get_secret_value()), name)
            for name, p in config.principals.items()
            for token in p.chat_tokens
        ]

    def authenticate_chat(self, token: str) -> str | None:
        digest = _token_digest(token)
        found = None
        for known, name in self._chat_tokens:
            if hmac.compare_digest(known, digest):
                found = name
        return found

    def roles_of(self, principal: str | None) -> frozenset[str]:
        if principal is None:
            return frozenset()
        return self._roles.get(principal, frozenset())

    def exists(self, principal: str) -> bool:
        return principal in self._roles
