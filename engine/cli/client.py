"""The client-side command of the CLI: `herald send`, talking to a running engine (`herald tui` is tui/cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

import aiohttp

from engine.cli.common import EngineAddress, engine_url, read_token, unreachable
from engine.core.config import Config
from engine.core.errors import HeraldError

ZERO_TIME = "0001-01-01T00:00:00Z"


def alert_payload(labels: dict[str, str], *, summary: str, resolved: bool) -> dict[str, object]:
    """An Alertmanager webhook payload (version 4) carrying one alert, as Alertmanager would send it."""
    labels = {"alertname": "TestAlert", **labels}
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    status = "resolved" if resolved else "firing"
    fingerprint = hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]
    alert = {"status": status, "labels": labels, "annotations": {"summary": summary}, "startsAt": now,
             "endsAt": now if resolved else ZERO_TIME, "generatorURL": "", "fingerprint": fingerprint}
    return {"receiver": "herald", "status": status, "alerts": [alert], "groupLabels": {}, "commonLabels": labels,
            "commonAnnotations": {"summary": summary}, "externalURL": "", "version": "4",
            "groupKey": "{}:{}", "truncatedAlerts": 0}


def send(config: Config, args: argparse.Namespace) -> int:
    url = engine_url(config, args.url)
    if args.send_kind == "alert":
        labels = {}
        for item in args.labels:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise HeraldError(f"label {item!r} is not KEY=VALUE")
            labels[key] = value
        return asyncio.run(_post_alert(url, alert_payload(labels, summary=args.summary, resolved=args.resolved)))
    return asyncio.run(_run_command(url, read_token(config), args.text, args.principal, args.timeout))


async def _post_alert(address: EngineAddress, payload: dict[str, Any]) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.post(f"{address.url}/hooks/alertmanager", json=payload) as response:
                body = await response.text()
        except aiohttp.ClientError as exc:
            raise unreachable(address, exc) from None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {}
    alert = payload["alerts"][0]
    labels = " ".join(f"{k}={v}" for k, v in alert["labels"].items())
    if response.status == 200:
        print(f"sent {alert['status']} alert {labels}; Herald accepted it as event {answer['events'][0]}")
        return 0
    print(f"Herald refused the alert ({response.status}): {answer.get('error', body.strip())}", file=sys.stderr)
    return 1


async def _run_command(address: EngineAddress, token: str, text: str, principal: str | None, timeout: float) -> int:
    # Answers go to the person, not the connection: a fixed id would take a late answer to an earlier `herald send`
    # (a result after its --timeout) for this one's.
    frame_id = f"cli-{secrets.token_hex(6)}"
    frame: dict[str, object] = {"type": "command", "text": text, "id": frame_id}
    if principal:
        frame["as"] = principal
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(f"{address.url}/api/v1/stream", headers=headers) as ws:
                await ws.send_json(frame)
                return await asyncio.wait_for(_print_replies(ws, frame_id), timeout)
        except aiohttp.WSServerHandshakeError as exc:
            raise HeraldError(f"Herald refused the API token ({exc.status}): is the data folder right?") from None
        except aiohttp.ClientError as exc:
            raise unreachable(address, exc) from None
        except TimeoutError:
            raise HeraldError(f"no result within {timeout:.0f} s") from None


async def _print_replies(ws: aiohttp.ClientWebSocketResponse, frame_id: str) -> int:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(msg.data)
        if frame.get("type") == "error":
            print(f"error: {frame.get('message')}", file=sys.stderr)
            return 1
        if frame.get("type") == "reply" and frame.get("id") == frame_id:
            print(frame["text"], flush=True)
            if frame.get("final"):
                return 0
    return 1
