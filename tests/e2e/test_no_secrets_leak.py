"""After a full run (chat logins, a link, API tokens, authenticated webhooks, verbose logging), no secret appears in
the engine's log output, in the audit log or in `herald audit show`."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from engine.cli.client import alert_payload
from engine.core.store import DB_NAME
from engine.testing import ChatClient
from tests.support import ALICE_TOKEN, BOB_TOKEN, REPO, free_port, wait_until_ok

BEARER = "webhook-bearer-secret-42424242"
DEVICE = "device-secret-for-linking-1234"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _herald(*args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=60, env=ENV)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.fixture
def secured_config(config_file: Path) -> Path:
    config_file.write_text(config_file.read_text() + f'\n[integrations.webhook.alertmanager]\n'
                                                     f'bearer_token = "{BEARER}"\n')
    return config_file


async def _post_alert(url: str, bearer: str) -> int:
    payload = alert_payload({"severity": "critical", "service": "database"}, summary="s", resolved=False)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/hooks/alertmanager", json=payload,
                                headers={"Authorization": f"Bearer {bearer}"}) as response:
            return response.status


async def test_no_secret_reaches_logs_or_audit(tmp_path: Path, secured_config: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    engine = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "-v", "--config", str(secured_config),
                               "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=ENV)
    secrets = [ALICE_TOKEN, BOB_TOKEN, BEARER, DEVICE]
    cli_output = []
    try:
        await wait_until_ok(f"{url}/healthz", process=engine)
        link_out = _herald("identity", "link", "bob", "--config", str(secured_config), cwd=tmp_path)
        link_token = re.search(r"^/link (\S+)$", link_out, re.MULTILINE).group(1)  # type: ignore[union-attr]
        api_token = _herald("token", "issue", "alice", "--config", str(secured_config), cwd=tmp_path).strip()
        secrets += [link_token, api_token]
        cli_output.append(_herald("token", "revoke", api_token, "--config", str(secured_config), cwd=tmp_path))

        async with ChatClient.connect(f"ws://127.0.0.1:{port}/chat", ALICE_TOKEN) as alice, \
                ChatClient.connect(f"ws://127.0.0.1:{port}/chat", DEVICE) as device:
            assert await _post_alert(url, BEARER) == 200
            assert await _post_alert(url, "a-wrong-guess-000000") == 403
            note = await alice.wait_for(lambda f: f["type"] == "notification")
            secrets += [b["id"] for b in note["buttons"]]  # signed button values are bearer credentials too
            for _ in range(2):  # a link, then its replay (refused)
                msg = await device.say(f"/link {link_token}")
                await device.wait_for(lambda f, m=msg: f.get("in_reply_to") == m and f["type"] == "reply")
            press = await alice.press(note["buttons"][0]["id"])
            await alice.wait_for(lambda f: f.get("in_reply_to") == press and f["type"] == "reply")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/api/v1/stream", headers={"Authorization": f"Bearer {api_token}"}) as r:
                assert r.status == 401  # revoked
    finally:
        engine.send_signal(signal.SIGTERM)
        log, _ = engine.communicate(timeout=30)

    cli_output.append(_herald("audit", "show", "--last", "1000", "--config", str(secured_config), cwd=tmp_path))
    with sqlite3.connect(tmp_path / "data" / DB_NAME) as conn:
        audit_rows = json.dumps(conn.execute("SELECT * FROM audit_log").fetchall())
        keys = [row[0] for row in conn.execute("SELECT secret FROM signing_keys")]
    secrets += [base64.urlsafe_b64encode(k).decode().rstrip("=") for k in keys] + [k.hex() for k in keys]

    assert "identity.linked" in audit_rows and "button.pressed" in audit_rows  # the run did what it should
    assert "DEBUG" in log  # verbose logging was on
    for where, text in (("engine log", log), ("audit log", audit_rows), ("CLI output", "\n".join(cli_output))):
        leaked = [s[:12] + "..." for s in secrets if s in text]
        assert not leaked, f"secrets in the {where}: {leaked}"
