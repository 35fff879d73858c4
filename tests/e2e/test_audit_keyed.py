"""The audit chain is keyed and anchored outside its database, checked with `herald audit verify` as a separate
process: truncating the newest entries, deleting all of them, or deleting one and recomputing the chain (with the
old unkeyed hash or a guessed key) are all detected. Someone holding the whole data folder (the key and the head
file) can still rewrite it consistently; a head kept elsewhere (`--expect-head`, from verify's output or the
engine's log) catches that too. An older unkeyed log is keyed from its next entry on and keeps verifying."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.core.config import Config
from engine.core.store import DB_NAME
from engine.testing import ChatClient, running_engine
from tests.support import ALICE_TOKEN, REPO, chat_url

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
HEAD = re.compile(r"head (\d+:\S+)")


def _herald(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=60,
                          env=ENV)


def _verify(config_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _herald("audit", "verify", "--config", str(config_file), *extra)


@pytest.fixture
async def populated(config: Config, config_file: Path, caplog: pytest.LogCaptureFixture) -> str:
    """A data folder with entries written by the engine and by the CLI; returns the head the engine logged."""
    caplog.set_level(logging.INFO, logger="herald.audit")
    async with running_engine(config) as engine:
        async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
            for text in ("/help", "/whoami"):
                msg = await alice.say(text)
                await alice.wait_for(lambda f, m=msg: f.get("in_reply_to") == m and f["type"] == "reply")
    for principal in ("alice", "bob"):
        assert _herald("token", "issue", principal, "--config", str(config_file)).returncode == 0
    logged = re.search(r"audit head (\d+:\S+)", caplog.text)
    assert logged, "the engine did not log its audit head"
    return logged.group(1)


def _db(config: Config) -> sqlite3.Connection:
    conn = sqlite3.connect(config.data_dir / DB_NAME, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def _rechain(conn: sqlite3.Connection, digest) -> None:  # type: ignore[no-untyped-def]
    """What an attacker with write access to the database does after deleting rows: renumber and recompute."""
    rows = conn.execute("SELECT * FROM audit_log ORDER BY seq").fetchall()
    conn.execute("DELETE FROM audit_log")
    prev = "0" * 64
    for seq, row in enumerate(rows, start=1):
        canonical = json.dumps([prev, seq, row["time"], row["action"], row["actor"], row["data"]],
                               separators=(",", ":"), ensure_ascii=False).encode()
        value = digest(canonical)
        conn.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (seq, row["time"], row["action"], row["actor"], row["data"], prev, value))
        prev = value


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac_with(key: bytes):  # type: ignore[no-untyped-def]
    return lambda data: "hmac-sha256:" + hmac.new(key, data, hashlib.sha256).hexdigest()


async def test_an_intact_log_verifies_and_names_its_head(populated: str, config_file: Path) -> None:
    ok = _verify(config_file)
    assert ok.returncode == 0, ok.stderr
    assert "audit log intact" in ok.stdout and "keyed from entry 1" in ok.stdout
    head = HEAD.search(ok.stdout).group(1)  # type: ignore[union-attr]
    assert _verify(config_file, "--expect-head", head).returncode == 0
    assert _verify(config_file, "--expect-head", populated).returncode == 0  # the engine's logged head is on it


async def test_truncating_the_newest_entries_is_detected(populated: str, config: Config, config_file: Path) -> None:
    with _db(config) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq > (SELECT max(seq) - 2 FROM audit_log)")
    broken = _verify(config_file)
    assert broken.returncode == 1
    assert "the newest entries were deleted" in broken.stderr


@pytest.mark.parametrize("head_file_too", [False, True])
async def test_deleting_every_entry_is_detected(populated: str, config: Config, config_file: Path,
                                                head_file_too: bool) -> None:
    with _db(config) as conn:
        conn.execute("DELETE FROM audit_log")
    if head_file_too:
        (config.data_dir / "audit.head").unlink()
    broken = _verify(config_file)
    assert broken.returncode == 1
    assert "no entry is keyed, but an audit key exists" in broken.stderr


@pytest.mark.parametrize("attacker", ["unkeyed sha-256", "a guessed key"])
async def test_deleting_a_row_and_recomputing_the_chain_is_detected(
    populated: str, config: Config, config_file: Path, attacker: str
) -> None:
    with _db(config) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq = 3")
        _rechain(conn, _sha256 if attacker == "unkeyed sha-256" else _hmac_with(b"guess" * 8))
    broken = _verify(config_file)
    assert broken.returncode == 1
    expected = "no entry is keyed" if attacker == "unkeyed sha-256" else "entry 1 was altered (its HMAC does not"
    assert expected in broken.stderr


async def test_the_whole_folder_can_be_rewritten_but_not_past_an_outside_head(
    populated: str, config: Config, config_file: Path
) -> None:
    outside = HEAD.search(_verify(config_file).stdout).group(1)  # type: ignore[union-attr]  # kept elsewhere
    key = bytes.fromhex((config.data_dir / "audit.key").read_text().strip())
    with _db(config) as conn:  # holding the key: delete the first entry (the one the engine logged as its head, at
        conn.execute("DELETE FROM audit_log WHERE seq = 1")  # start), recompute, and rewrite the head file to match
        _rechain(conn, _hmac_with(key))
        seq, digest = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    (config.data_dir / "audit.head").write_text(json.dumps({"seq": seq, "hash": digest}))
    assert _verify(config_file).returncode == 0  # what stays undetectable inside the folder (docs/security.md)
    for head in (outside, populated):  # verify's earlier output, or the engine's log line
        broken = _verify(config_file, "--expect-head", head)
        assert broken.returncode == 1
        assert f"the expected head {head} is not on the chain" in broken.stderr


async def test_an_older_unkeyed_log_is_keyed_from_its_next_entry(config: Config, config_file: Path) -> None:
    config.data_dir.mkdir(mode=0o700)
    with _db(config) as conn:  # a log as an older Herald wrote it: plain SHA-256, no key file
        conn.execute("CREATE TABLE audit_log (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, action TEXT NOT NULL, "
                     "actor TEXT NOT NULL, data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)")
        for n in range(3):
            conn.execute("INSERT INTO audit_log VALUES (?, ?, 'engine.started', 'system', '{}', '', '')",
                         (n + 1, f"2026-01-0{n + 1}T00:00:00+00:00"))
        _rechain(conn, _sha256)
    legacy = _verify(config_file)
    assert legacy.returncode == 0 and "3 entries, none keyed" in legacy.stdout

    assert _herald("token", "issue", "alice", "--config", str(config_file)).returncode == 0
    keyed = _verify(config_file)
    assert keyed.returncode == 0, keyed.stderr
    assert "5 entries, keyed from entry 4" in keyed.stdout
    with _db(config) as conn:
        assert conn.execute("SELECT action FROM audit_log WHERE seq = 4").fetchone()[0] == "audit.keyed"
        conn.execute("UPDATE audit_log SET actor = 'nobody' WHERE seq = 2")  # rewrite the unkeyed part ...
        rows = conn.execute("SELECT * FROM audit_log WHERE seq <= 3 ORDER BY seq").fetchall()
        prev = "0" * 64
        for row in rows:  # ... and recompute its hashes: the first keyed entry still links to the old ones
            canonical = json.dumps([prev, row["seq"], row["time"], row["action"], row["actor"], row["data"]],
                                   separators=(",", ":"), ensure_ascii=False).encode()
            conn.execute("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?",
                         (prev, _sha256(canonical), row["seq"]))
            prev = _sha256(canonical)
    broken = _verify(config_file)
    assert broken.returncode == 1 and "entry 4 does not link to entry 3" in broken.stderr


async def test_writing_after_a_truncation_keeps_the_evidence(
    populated: str, config: Config, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _db(config) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq > (SELECT max(seq) - 2 FROM audit_log)")
    recorded = (config.data_dir / "audit.head").read_text()
    assert _herald("token", "issue", "alice", "--config", str(config_file)).returncode == 0  # the CLI writes ...
    async with running_engine(config):  # ... and so does the engine: neither moves the head file past the gap
        pass
    assert (config.data_dir / "audit.head").read_text() == recorded
    assert "the audit log no longer holds the head" in caplog.text
    broken = _verify(config_file)
    assert broken.returncode == 1 and "is not the one" in broken.stderr and "records: the chain was rewritten" \
        in broken.stderr


async def test_archiving_while_the_engine_writes_keeps_one_chain(config: Config, config_file: Path) -> None:
    """`herald audit archive` (another process) moves the older entries to a file while the engine appends; the log
    verifies alone and through the archive, and a copy of the head from before the archive is found in the file."""
    async with running_engine(config) as engine:
        async with ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
            for text in ("/help", "/whoami"):
                msg = await alice.say(text)
                await alice.wait_for(lambda f, m=msg: f.get("in_reply_to") == m and f["type"] == "reply")
            before = HEAD.search(_verify(config_file).stdout).group(1)  # type: ignore[union-attr]
            cut = datetime.now(UTC).isoformat()
            archived = await asyncio.to_thread(_herald, "audit", "archive", "--before", cut, "--config",
                                               str(config_file))
            assert archived.returncode == 0, archived.stderr
            msg = await alice.say("/whoami")  # the engine goes on appending after the archive's entry
            await alice.wait_for(lambda f: f.get("in_reply_to") == msg and f["type"] == "reply")
    [path] = (config.data_dir / "audit-archive").iterdir()
    assert f"to {path}" in archived.stdout
    first = int(re.search(r"the log now starts at entry (\d+)", archived.stdout).group(1))  # type: ignore[union-attr]
    alone = _verify(config_file)
    assert alone.returncode == 0, alone.stderr
    assert f"(from entry {first}; entries before it are archived)" in alone.stdout
    assert "which is archived" in _verify(config_file, "--expect-head", before).stderr  # not in the db any more
    whole = _verify(config_file, "--archive", str(path), "--expect-head", before)
    assert whole.returncode == 0, whole.stderr
    assert "1 archive file(s) included" in whole.stdout
    with _db(config) as conn:
        assert conn.execute("SELECT min(seq) FROM audit_log").fetchone()[0] == first
        assert conn.execute("SELECT count(*) FROM audit_log WHERE action = 'command.received' AND seq > ?",
                            (first,)).fetchone()[0] >= 1
