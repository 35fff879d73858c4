"""`herald identity ...` and `herald token ...`: linking accounts to people, and API tokens.

These work on the data folder's database directly, so they run whether or not the engine is up; every change is
written to the audit log. Tokens are printed once and never stored or audited (only their ids are).
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import jwt

from engine.cli.common import EXIT_FAILED, EXIT_OK, add_config_args, load_for
from engine.core.config import Config
from engine.core.errors import ConfigError
from engine.core.private import require_private_folder
from engine.core.store import DB_NAME, connect, transaction
from engine.security import audit, identity, keys
from engine.server.api import API_PURPOSE

DEFAULT_API_TTL = "8h"
MAX_API_TTL_S = 30 * 24 * 3600
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """`90s`, `10m`, `8h`, `7d` -> seconds."""
    try:
        value, unit = int(text[:-1]), _UNITS[text[-1]]
    except (ValueError, KeyError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 10m, 8h or 7d") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return value * unit


@contextmanager
def _database(config: Config) -> Iterator[sqlite3.Connection]:
    require_private_folder(config.data_dir)
    conn = connect(config.data_dir / DB_NAME)
    try:
        for schema in (keys.SCHEMA, identity.SCHEMA, audit.SCHEMA):
            conn.executescript(schema)
        yield conn
    finally:
        conn.close()


def _audit(conn: sqlite3.Connection, action: str, **data: object) -> None:
    audit.append_row(conn, action, "cli", data)


def _when(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ident = sub.add_parser("identity", help="link chat accounts to people")
    ident_sub = ident.add_subparsers(dest="identity_command", metavar="ACTION", required=True)
    link = ident_sub.add_parser("link", help="print a one-time token; the person sends /link TOKEN from chat")
    add_config_args(link)
    link.add_argument("principal", help="the person (a principal in the config)")
    link.add_argument("--ttl", type=parse_duration, default=parse_duration("10m"),
                      help="how long the token is valid (at most 10m; default 10m)")
    link.set_defaults(handler=_identity_link)
    listing = ident_sub.add_parser("list", help="list people, their roles and linked accounts")
    add_config_args(listing)
    listing.set_defaults(handler=_identity_list)
    unlink = ident_sub.add_parser("unlink", help="unlink one account (PLATFORM:ACCOUNT) or all of a person's")
    add_config_args(unlink)
    unlink.add_argument("target", help="a principal name, or PLATFORM:ACCOUNT as shown by `identity list`")
    unlink.set_defaults(handler=_identity_unlink)

    token = sub.add_parser("token", help="API tokens (JWT) for the TUI and the API")
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    issue = token_sub.add_parser("issue", help="print a new API token for a principal")
    add_config_args(issue)
    issue.add_argument("principal")
    issue.add_argument("--ttl", type=parse_duration, default=parse_duration(DEFAULT_API_TTL),
                       help=f"lifetime (default {DEFAULT_API_TTL}, at most 30d)")
    issue.set_defaults(handler=_token_issue)
    revoke = token_sub.add_parser("revoke", help="revoke a token (give the token or its id)")
    add_config_args(revoke)
    revoke.add_argument("token", help="the token, or its jti")
    revoke.set_defaults(handler=_token_revoke)
    rotate = token_sub.add_parser("rotate", help="start signing with a new key; old tokens verify until they expire")
    add_config_args(rotate)
    rotate.set_defaults(handler=_token_rotate)


def _require_principal(config: Config, name: str) -> None:
    if name not in config.principals:
        known = ", ".join(sorted(config.principals)) or "none configured"
        raise ConfigError(f"unknown principal {name!r} (known: {known})")


def _identity_link(args: argparse.Namespace) -> int:
    config = load_for(args)
    _require_principal(config, args.principal)
    with _database(config) as conn:
        token, claims = transaction(conn, lambda c: identity.issue_link_token(c, args.principal, args.ttl))
        _audit(conn, "identity.link_issued", principal=args.principal, jti=claims["jti"],
                         expires=_when(claims["exp"]))
    print(f"One-time link token for {args.principal}, valid until {_when(claims['exp'])}. "
          f"From the chat account to link, send:\n\n/link {token}\n")
    return EXIT_OK


def _identity_list(args: argparse.Namespace) -> int:
    config = load_for(args)
    with _database(config) as conn:
        linked = identity.links(conn)
    for name, principal in sorted(config.principals.items()):
        accounts = [f"{row['platform']}:{row['account']}" for row in linked if row["principal"] == name]
        tokens = len(principal.chat_tokens)
        print(f"{name:<16} roles: {', '.join(principal.roles) or '-':<20} chat tokens: {tokens}  "
              f"linked: {', '.join(accounts) or '-'}")
    for row in linked:
        if row["principal"] not in config.principals:
            print(f"(stale link) {row['platform']}:{row['account']} -> {row['principal']} (not in the config)")
    return EXIT_OK


def _identity_unlink(args: argparse.Namespace) -> int:
    config = load_for(args)
    with _database(config) as conn:
        if ":" in args.target:
            platform, account = args.target.split(":", 1)
            count = identity.unlink(conn, platform=platform, account=account)
            _audit(conn, "identity.unlinked", platform=platform, account=account, count=count)
        else:
            count = identity.unlink(conn, principal=args.target)
            _audit(conn, "identity.unlinked", principal=args.target, count=count)
    print(f"unlinked {count} account{'s' if count != 1 else ''}")
    return EXIT_OK if count else EXIT_FAILED


def _token_issue(args: argparse.Namespace) -> int:
    config = load_for(args)
    _require_principal(config, args.principal)
    ttl = min(args.ttl, MAX_API_TTL_S)
    roles = tuple(config.principals[args.principal].roles)
    with _database(config) as conn:
        token, claims = transaction(conn, lambda c: keys.issue(c, sub=args.principal, purpose=API_PURPOSE,
                                                               ttl_s=ttl, roles=roles))
        _audit(conn, "token.issued", sub=args.principal, jti=claims["jti"],
                         expires=_when(claims["exp"]))
    print(token)
    return EXIT_OK


def _token_revoke(args: argparse.Namespace) -> int:
    config = load_for(args)
    try:
        claims = jwt.decode(args.token, options={"verify_signature": False})
        jti, exp = str(claims["jti"]), int(claims["exp"])
    except (jwt.PyJWTError, KeyError, ValueError):
        jti, exp = args.token, int(datetime.now(UTC).timestamp()) + MAX_API_TTL_S
    with _database(config) as conn:
        keys.revoke(conn, jti, exp)
        _audit(conn, "token.revoked", jti=jti)
    print(f"revoked {jti}")
    return EXIT_OK


def _token_rotate(args: argparse.Namespace) -> int:
    config = load_for(args)
    with _database(config) as conn:
        kid, _ = transaction(conn, keys.rotate)
        retired = keys.retire_keys_older_than(conn, MAX_API_TTL_S)
        _audit(conn, "keys.rotated", kid=kid, retired=retired)
    print(f"new signing key {kid}; tokens signed with older keys verify until they expire")
    return EXIT_OK
