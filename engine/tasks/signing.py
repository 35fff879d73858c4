"""Signatures on every entry Herald puts into Redis, so that whoever can write to Redis cannot make a task, change
one, or report a result (issue 18 item 2).

Each entry carries `sig`, the HMAC-SHA256 under the queue's signing key of

    herald-queue/1 LF kind LF stream LF worker LF body

`kind` is "task" (engine -> workers) or "result" (worker -> engine); `worker` is empty for a task and the sending
worker's name for a result, and the result's body must name the same worker. Binding the kind and the stream stops
an entry from being moved to the other stream or read as the other kind; binding the worker stops a result from
being passed off as another worker's. The key comes from the config (inline, an environment variable or a file)
and is never written to Redis, a log or the audit log.

What a signature cannot stop: a copy of a genuine entry (see docs/durability.md, "The Redis queue").
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from pydantic import ValidationError

from engine.core.config import QueueConfig
from engine.core.errors import EntryRefused, QueueError
from engine.tasks.record import TaskRecord

MIN_KEY_CHARS = 32
_VERSION = "herald-queue/1"
_MAX_ECHO = 80  # how much of a refused entry's claims a refusal repeats


def load_key(config: QueueConfig) -> bytes:
    """The signing key from wherever the config says it is; a QueueError saying what to fix if it is not usable."""
    if config.signing_key is not None:
        key, where = config.signing_key.get_secret_value(), "[queue] signing_key"
    elif config.signing_key_env:
        where = f"the environment variable {config.signing_key_env} ([queue] signing_key_env)"
        key = os.environ.get(config.signing_key_env, "")
        if not key:
            raise QueueError(f"{where} is not set")
    elif config.signing_key_file is not None:
        where = f"{config.signing_key_file} ([queue] signing_key_file)"
        key = read_private_file(config.signing_key_file, "[queue] signing_key_file")
    else:
        raise QueueError("no signing key: set [queue] signing_key, signing_key_env or signing_key_file")
    if len(key) < MIN_KEY_CHARS:
        raise QueueError(f"the signing key in {where} is shorter than {MIN_KEY_CHARS} characters "
                         f"(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return key.encode()


def read_private_file(path: Path, setting: str) -> str:
    """A secret kept in a file only its owner may read (surrounding whitespace dropped)."""
    try:
        if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise QueueError(f"{path} ({setting}) can be read by other users: chmod 600 it")
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise QueueError(f"cannot read {path} ({setting}): {exc.strerror}") from None


def _clip(value: object) -> str:
    text = str(value)
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "..."


class EntrySigner:
    """Signs the entries this process writes and checks the ones it reads."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, kind: str, stream: str, worker: str, body: str) -> str:
        message = "\n".join((_VERSION, kind, stream, worker, body)).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def task_fields(self, stream: str, task: TaskRecord) -> dict[str, str]:
        body = task.model_dump_json()
        return {"task": body, "sig": self._mac("task", stream, "", body)}

    def result_fields(self, stream: str, task: TaskRecord) -> dict[str, str]:
        assert task.worker, "a result names the worker that sends it"
        body = task.model_dump_json()
        return {"task": body, "worker": task.worker, "sig": self._mac("result", stream, task.worker, body)}

    def read_task(self, stream: str, fields: dict[str, str]) -> TaskRecord:
        """The task of a signed task entry; EntryRefused if it is unsigned, altered or not a task."""
        return self._read("task", stream, fields, worker="")

    def read_result(self, stream: str, fields: dict[str, str]) -> TaskRecord:
        """The task of a signed result entry, which names the worker that signed it; EntryRefused otherwise."""
        worker = fields.get("worker", "")
        if not worker:
            raise EntryRefused("a result that names no worker")
        task = self._read("result", stream, fields, worker=worker)
        if task.worker != worker:
            raise EntryRefused(f"a result signed for worker {_clip(worker)!r} that names {_clip(task.worker)!r}")
        return task

    def _read(self, kind: str, stream: str, fields: dict[str, str], *, worker: str) -> TaskRecord:
        body, sig = fields.get("task"), fields.get("sig")
        if body is None:
            raise EntryRefused(f"no task in the entry (fields: {_clip(sorted(fields))})")
        if not sig:
            raise EntryRefused("no signature")
        if not hmac.compare_digest(sig.encode(), self._mac(kind, stream, worker, body).encode()):
            raise EntryRefused("a wrong signature (not written by Herald with this key, or altered since)")
        try:
            return TaskRecord.model_validate_json(body)
        except ValidationError as exc:  # signed but unreadable: another Herald version
            raise EntryRefused(f"a signed entry this version cannot read ({exc.error_count()} problems)") from None
