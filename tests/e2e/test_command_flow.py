"""`/backup now` from chat runs the whitelisted script in rootless Podman; roles gate it; the audit chain holds."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from engine.core.config import Config
from engine.core.store import DB_NAME
from engine.server.app import Engine
from engine.testing import ChatClient, running_engine
from tests.support import ALICE_TOKEN, BOB_TOKEN, chat_url

STATES = ["INIT", "CHECK_PERMISSION", "VALIDATE_PARAMS", "EXECUTE", "REPORT_RESULT"]


def trace_of(conn: sqlite3.Connection, run_id: str) -> list[str]:
    """The states stored for a run, in order."""
    return [row[0] for row in conn.execute("SELECT state FROM run_trace WHERE run_id = ? ORDER BY rowid", (run_id,))]


def _herald(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=60)


async def test_admin_runs_backup_in_the_sandbox_and_sees_each_state(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        msg = await alice.say("/backup now")
        ack = await alice.wait_for(lambda f: f["type"] == "ack" and f["id"] == msg)
        result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg, timeout=120)

    states = [f["state"] for f in alice.replies_to(msg) if f["type"] == "progress"]
    assert [s for i, s in enumerate(states) if s not in states[:i]] == STATES
    # stored: where the run went; the checks it passed through are implied
    run_id = next(f["run"] for f in alice.replies_to(msg) if f["type"] == "progress")
    stored = await engine.db.call(trace_of, run_id)
    assert stored[0] == "EXECUTE" and stored[-1] == "REPORT_RESULT" and set(stored) == {"EXECUTE", "REPORT_RESULT"}
    assert alice.frames.index(ack) < alice.frames.index(next(f for f in alice.frames if f["type"] == "progress"))
    assert result["ok"] is True and result["exit_code"] == 0, result
    assert "backup (now) started" in result["output"] and "backup finished" in result["output"]

    task = await engine.tasks.get(result["task"])
    assert task is not None and task.status == "succeeded"
    assert (task.platform, task.command, task.params.script, task.params.args) == (
        "chat", "/backup now", "backup.sh", ["now"])
    assert "network=none" in task.enforced and "cap_drop=ALL" in task.enforced


async def test_caller_without_the_role_is_denied_and_nothing_runs(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        msg = await bob.say("/backup now")
        reply = await bob.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == msg)
    assert reply["text"] == "Denied: /backup requires role admin, which bob does not have."
    states = [f["state"] for f in bob.replies_to(msg) if f["type"] == "progress"]
    assert states == ["INIT", "CHECK_PERMISSION", "DENIED"]
    run_id = next(f["run"] for f in bob.replies_to(msg) if f["type"] == "progress")
    await engine.db.flush()
    assert await engine.db.call(trace_of, run_id) == ["DENIED"]
    assert await engine.tasks.recent(10) == []
    denied = await engine.db.call(
        lambda conn: conn.execute("SELECT actor FROM audit_log WHERE action = 'command.denied'").fetchall())
    assert [row["actor"] for row in denied] == ["bob"]


async def test_unknown_command_lists_what_the_caller_may_run(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice, \
            ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        a = await alice.say("/deploy prod")
        b = await bob.say("/help")
        t = await alice.say("hello there")
        unknown = await alice.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == a)
        helped = await bob.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == b)
        chatter = await alice.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == t)
    assert unknown["text"] == "Unknown command /deploy. You can run: /backup, /cancel, /help, /link, /task, /whoami."
    assert helped["text"] == "You can run: /cancel, /help, /link, /task, /whoami."  # bob may not run /backup
    assert "/help" in chatter["text"]


async def test_shell_metacharacters_in_arguments_are_rejected_before_anything_runs(engine: Engine) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        msg = await alice.say("/backup $(id);rm")
        reply = await alice.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == msg)
    assert reply["text"].startswith("Rejected: argument '$(id);rm' is not allowed")
    assert await engine.tasks.recent(10) == []


async def test_missing_podman_fails_the_run_with_a_fix_but_the_engine_keeps_working(config: Config) -> None:
    broken = config.model_copy(update={"sandbox": config.sandbox.model_copy(
        update={"podman_url": "unix:///nonexistent/podman.sock", "autostart": False})})
    async with running_engine(broken) as engine:
        async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
            msg = await alice.say("/backup now")
            result = await alice.wait_for(lambda f: f["type"] == "result" and f["in_reply_to"] == msg)
            again = await alice.say("/help")
            await alice.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == again)
    assert result["ok"] is False
    assert "podman" in result["text"].lower() and "/nonexistent/podman.sock" in result["text"]


async def test_audit_verify_passes_then_fails_after_an_edit(engine: Engine, config: Config) -> None:
    async with ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        msg = await bob.say("/backup now")
        await bob.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == msg)
    data = str(config.data_dir)

    ok = _herald("audit", "verify", "--data", data)
    assert ok.returncode == 0, ok.stderr
    assert "intact" in ok.stdout

    with sqlite3.connect(config.data_dir / DB_NAME) as conn:
        seq, body = conn.execute("SELECT seq, data FROM audit_log WHERE action = 'command.denied'").fetchone()
        edited = json.loads(body) | {"reason": "allowed after all"}
        conn.execute("UPDATE audit_log SET data = ? WHERE seq = ?", (json.dumps(edited), seq))
    broken = _herald("audit", "verify", "--data", data)
    assert broken.returncode == 1
    assert f"entry {seq}" in broken.stderr and "altered" in broken.stderr


async def test_audit_verify_notices_a_deleted_entry(engine: Engine, config: Config) -> None:
    async with ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        msg = await bob.say("/backup now")
        await bob.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == msg)
    with sqlite3.connect(config.data_dir / DB_NAME) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq = 2")
    broken = _herald("audit", "verify", "--data", str(config.data_dir))
    assert broken.returncode == 1 and "entry 2 is missing" in broken.stderr


async def test_audit_show_since_filters_by_time(engine: Engine, config: Config) -> None:
    async with ChatClient.connect(chat_url(engine), BOB_TOKEN) as bob:
        msg = await bob.say("/help")
        await bob.wait_for(lambda f: f["type"] == "reply" and f["in_reply_to"] == msg)
    recent = _herald("audit", "show", "--since", "10m", "--data", str(config.data_dir))
    assert recent.returncode == 0 and "command.received" in recent.stdout and "engine.started" in recent.stdout
    future = _herald("audit", "show", "--since", "2999-01-01T00:00", "--data", str(config.data_dir))
    assert future.returncode == 0 and future.stdout == ""
    bad = _herald("audit", "show", "--since", "yesterday", "--data", str(config.data_dir))
    assert bad.returncode == 2 and "not a duration" in bad.stderr


@pytest.mark.parametrize(("text", "refusal"), [
    ("/backup ; rm -rf /", "Rejected: argument ';' is not allowed"),
    ("/backup $(id)", "Rejected: argument '$(id)' is not allowed"),
    ("/backup `id`", "Rejected: argument '`id`' is not allowed"),
    ("/backup --force", "Rejected: argument '--force' may not start with '-'"),
    ("/backup now\nrm -rf /", "a command is one line of printable text"),
    ("/backup now\x00x", "a command is one line of printable text"),
])
async def test_injection_attempts_are_refused_before_anything_runs(engine: Engine, text: str, refusal: str) -> None:
    async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        msg = await alice.say(text)
        answer = await alice.wait_for(lambda f: f.get("in_reply_to") == msg and f["type"] in ("reply", "error"))
    assert refusal in (answer.get("text") or answer.get("message"))
    assert await engine.tasks.recent(10) == []
