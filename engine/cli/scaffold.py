"""`herald init`: a starter config with one admin principal, a fresh chat token and the ops team."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

STARTER = """\
# Herald configuration (TOML). Every key is optional; unknown keys are errors. See docs/configuration.md.
# This file holds a chat token: keep it private (it was written with mode 0600).

# Commands sent with the local API token (herald send, the TUI) act as this principal.
api_principal = "admin"

[principals.admin]
roles = ["admin"]
chat_tokens = ["{token}"]

[teams.ops]
members = ["admin"]
chat_rooms = ["ops"]
"""
QUEUE_SECTION = """
[queue]
# To run tasks in `herald worker` processes, name a Redis that asks for a password (docs/queue.md):
# redis_url = "redis://herald:PASSWORD@127.0.0.1:6379/0"
# Every entry Herald puts into Redis is signed with this key; each worker needs the same one (or the same key in
# signing_key_file / signing_key_env). It never goes to Redis.
signing_key = "{queue_key}"
"""


def write_starter_config(path: Path, *, force: bool = False) -> str:
    """Write the starter config; return a message saying where and how to connect a chat client."""
    if path.exists() and not force:
        return f"{path} already exists; left as it is (use --force to replace it)"
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(STARTER.format(token=token) + QUEUE_SECTION.format(queue_key=secrets.token_urlsafe(32)))
    return (f"wrote {path}: principal 'admin' (role admin) in team ops.\n"
            f"Its chat token is in the file (principals.admin.chat_tokens); chat clients send it in their auth frame.\n"
            f"It also holds a fresh [queue] signing_key, for the Redis task queue: give `herald worker` the same key.")
