"""`herald alerts`: the alerts a running engine knows, and acknowledging, unacknowledging or muting one, from a shell.

It reads the engine's stream API (`/api/v1/stream`: its first frame is a snapshot with the alerts) and acts by
pressing the alert's own buttons there, so a press from the CLI passes the same checks as one from chat or the TUI
(signature, expiry, roles, recipients) and is audited as the token's person.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from collections.abc import Sequence
from typing import Any

import aiohttp

from dsl.checks import MUTE_UNTIL_RESOLVED
from engine.cli.common import EXIT_FAILED, EXIT_OK, EngineAddress, add_client_args, engine_url, load_for, read_token
from engine.client.remote import parse_frame, stream_url
from engine.client.snapshots import AlertView, Snapshot
from engine.core.errors import HeraldError

TIMEOUT_S = 15.0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    alerts = sub.add_parser("alerts", help="list, show, (un)acknowledge or mute the alerts of a running engine",
                            description="Examples:  herald alerts list\n"
                                        "           herald alerts show DiskFull\n"
                                        "           herald alerts ack 3f2a9c\n"
                                        "           herald alerts unack 3f2a9c\n"
                                        "           herald alerts mute DiskFull --for 4h",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_client_args(alerts)
    kinds = alerts.add_subparsers(dest="alerts_kind", metavar="ACTION", required=True)
    listing = kinds.add_parser("list", help="the firing alerts (--all: resolved ones too), newest first")
    listing.add_argument("--all", action="store_true", help="include resolved alerts")
    show = kinds.add_parser("show", help="one alert in full")
    ack = kinds.add_parser("ack", help="acknowledge an alert (as the API token's person)")
    unack = kinds.add_parser("unack", help="return an acknowledged alert to open: its escalation resumes")
    mute = kinds.add_parser("mute", help="mute an alert with one of the Mute buttons it was sent with")
    mute.add_argument("--for", dest="duration", metavar="D",
                      help="which Mute button: 1h, 4h... or resolved (`mute until resolved`); default: the first")
    kinds.add_parser("silences", help="the alerts muted now, and until when, and Herald's silences by labels")
    for parser in (show, ack, unack, mute):
        parser.add_argument("alert", help="a fingerprint (or its start) or an alert name")
    for parser in (listing, show, ack, unack, mute, kinds.choices["silences"]):
        add_client_args(parser, suppress=True)
    alerts.set_defaults(handler=_alerts)


def _alerts(args: argparse.Namespace) -> int:
    config = load_for(args)
    return asyncio.run(_act(engine_url(config, args.url), read_token(config), args))


async def _act(address: EngineAddress, token: str, args: argparse.Namespace) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as http:
        try:
            async with http.ws_connect(stream_url(address.url), headers={"Authorization": f"Bearer {token}"}) as ws:
                snapshot = await _snapshot(ws)
                kind = args.alerts_kind
                if kind == "list":
                    print(_table([a for a in snapshot.alerts if args.all or a.status == "firing"]))
                    return EXIT_OK
                if kind == "silences":
                    print(_table([a for a in snapshot.alerts if a.muted_until]))
                    print(_silences(await _fetch(http, address.url, token, "/api/v1/silences")))
                    return EXIT_OK
                alert = _find(snapshot.alerts, args.alert)
                if kind == "show":
                    print(_details(alert))
                    print(_history(await _fetch_history(http, address.url, token, alert.fingerprint)))
                    return EXIT_OK
                return await _press(ws, alert, kind, getattr(args, "duration", None))
        except aiohttp.WSServerHandshakeError as exc:
            raise HeraldError(f"Herald refused the API token ({exc.status}): is the data folder right?") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise HeraldError(f"cannot reach Herald at {address.url} ({exc}); is `herald run` running?") from None
        except TimeoutError:
            raise HeraldError(f"no answer from Herald within {TIMEOUT_S:.0f} s") from None


async def _fetch_history(http: aiohttp.ClientSession, url: str, token: str, fingerprint: str) -> list[dict[str, Any]]:
    async with http.get(f"{url.rstrip('/')}/api/v1/alerts/{fingerprint}",
                        headers={"Authorization": f"Bearer {token}"}) as response:
        if response.status == 404:
            return []
        body = await response.json()
        if response.status != 200:
            raise HeraldError(f"the alert's history: {body.get('error', response.status)}")
        return list(body["history"])


async def _fetch(http: aiohttp.ClientSession, url: str, token: str, path: str) -> dict[str, Any]:
    async with http.get(f"{url.rstrip('/')}{path}", headers={"Authorization": f"Bearer {token}"}) as response:
        body = await response.json()
        if response.status != 200:
            raise HeraldError(f"{path}: {body.get('error', response.status)}")
        return dict(body)


def _silences(body: dict[str, Any]) -> str:
    """Herald's silences by labels (`silence alert where ...`), each with whom and until when."""
    found = body.get("silences") or []
    if not found:
        return "\nno silences by labels"
    rows = [("SILENCE", "MATCHERS", "BY", "RULE", "UNTIL", "ALERTMANAGER")]
    for s in found:
        matchers = ", ".join(f'{m["name"]}="{m["value"]}"' for m in s["matchers"])
        rows.append((s["id"][-12:], matchers, s["created_by"], s["rule"], s["until"][:16].replace("T", " "),
                     s.get("alertmanager_id") or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n" + "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                             for row in rows)


# What a history line shows of an audit entry's data, in this order (the alert itself is the line's subject).
_HISTORY_FIELDS = ("status", "severity", "button", "arg", "platform", "chat", "recipients", "until", "silence",
                   "rule", "reason", "error", "target", "step", "due", "was")


def _history(entries: Sequence[dict[str, Any]]) -> str:
    if not entries:
        return "  history       none"
    lines = ["  history"]
    for entry in entries:
        data = entry["data"]
        details = " ".join(f"{key}={data[key]}" for key in _HISTORY_FIELDS if data.get(key) not in (None, ""))
        lines.append(f"    {entry['time'][:19].replace('T', ' ')}  {entry['action']:<24} {entry['actor']:<12} "
                     f"{details}".rstrip())
    return "\n".join(lines)


async def _snapshot(ws: aiohttp.ClientWebSocketResponse) -> Snapshot:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT and isinstance(update := parse_frame(msg.data), Snapshot):
            return update
    raise HeraldError("the engine closed the stream before sending its snapshot")


def _find(alerts: Sequence[AlertView], wanted: str) -> AlertView:
    found = [a for a in alerts if a.fingerprint.startswith(wanted)] or [a for a in alerts if a.name == wanted]
    firing = [a for a in found if a.status == "firing"]
    if len(firing) == 1 or (len(found) == 1 and not firing):
        return (firing or found)[0]
    if not found:
        raise HeraldError(f"no alert {wanted!r}: `herald alerts list --all` shows the ones Herald knows")
    names = ", ".join(f"{a.fingerprint[:12]} ({a.name})" for a in found[:10])
    raise HeraldError(f"{wanted!r} matches {len(found)} alerts: {names}; give more of a fingerprint")


async def _press(ws: aiohttp.ClientWebSocketResponse, alert: AlertView, action: str, duration: str | None) -> int:
    if duration == "resolved":
        duration = MUTE_UNTIL_RESOLVED
    buttons = [b for b in alert.buttons if b.action == action and (duration is None or b.arg == duration)]
    name = alert.name or alert.fingerprint
    if not buttons and alert.status == "firing" and action in ("ack", "unack"):
        if action == "ack" and alert.acknowledged_by:
            print(f"{name}: already acknowledged by {alert.acknowledged_by}", file=sys.stderr)
            return EXIT_FAILED
        if action == "unack" and not alert.acknowledged_by:
            print(f"{name}: not acknowledged (it is open): nothing to unacknowledge", file=sys.stderr)
            return EXIT_FAILED
    if not buttons:
        offered = ", ".join(f"{b.label}" for b in alert.buttons) or "none"
        why = "it is resolved" if alert.status == "resolved" else f"its buttons now: {offered}"
        print(f"{name}: no {action}{' ' + duration if duration else ''} button to press "
              f"({why})", file=sys.stderr)
        return EXIT_FAILED
    press_id = f"cli-{secrets.token_hex(6)}"  # answers go to the person: an earlier run's late one is not this one's
    await ws.send_json({"type": "press", "button": buttons[0].id, "id": press_id})
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(msg.data)
        if frame.get("type") == "error":
            print(f"error: {frame.get('message')}", file=sys.stderr)
            return EXIT_FAILED
        if frame.get("type") == "reply" and frame.get("id") == press_id:
            text = str(frame.get("text", ""))
            print(text)
            return EXIT_OK if text.startswith(("Acknowledged", "Unacknowledged", "Muted")) else EXIT_FAILED
    raise HeraldError("the engine closed the stream before answering")


def _table(alerts: Sequence[AlertView]) -> str:
    if not alerts:
        return "no alerts"
    rows = [("FINGERPRINT", "STATUS", "SEVERITY", "NAME", "SERVICE", "ACKED BY", "MUTED UNTIL", "SUMMARY")]
    for a in sorted(alerts, key=lambda a: a.time, reverse=True):
        rows.append((a.fingerprint[:12], a.status, a.severity or "-", a.name or "-", a.service or "-",
                     a.acknowledged_by or "-", (a.muted_until or "-")[:16], a.summary[:60]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
                     for row in rows)


def _details(a: AlertView) -> str:
    lines = [f"{a.name or '(no name)'}  [{a.severity or 'no severity'}]  {a.status}",
             f"  fingerprint   {a.fingerprint}", f"  service       {a.service or '-'}",
             f"  summary       {a.summary or '-'}", f"  last event    {a.event_id} at {a.time}",
             f"  acknowledged  {a.acknowledged_by or 'no'}", f"  muted until   {a.muted_until or 'no'}",
             f"  buttons       {', '.join(b.label for b in a.buttons) or 'none'}"]
    return "\n".join(lines)
