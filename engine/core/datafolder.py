"""One engine per data folder, and where it listens, for the clients that use the same folder.

Two engines on one folder would interleave their writes to one journal and one audit chain. `claim()` takes an
exclusive `flock` on `<data>/engine.lock` (and writes the engine's pid into it) for the engine's whole life; the
kernel drops the lock when the process dies, even by kill -9, so a crash never leaves the folder locked. Once the
engine listens, `publish()` writes its address to `<data>/engine.address` (`http://host:port`, one line), so
`herald send`, `tui` and `reload` reach the port the engine really took (`--port 0`, a command-line override) rather
than the one in the config. A clean stop removes the address; after a crash the file stays, and clients that follow
it name it when the connection fails.

    HeraldError
    └── FolderInUse      another live process holds the folder's lock (the message names its pid and address)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from engine.core import private
from engine.core.errors import HeraldError

LOCK_FILE = "engine.lock"
ADDRESS_FILE = "engine.address"


class FolderInUse(HeraldError):
    """Another engine runs on this data folder."""


class FolderClaim:
    """The running engine's hold on its data folder; `release()` (or process exit) gives it up."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd: int | None = fd

    def publish(self, url: str) -> None:
        """Say where this engine listens (atomically: a reader never sees half an address)."""
        path = self.data_dir / ADDRESS_FILE
        partial = path.with_name(f".{ADDRESS_FILE}.{os.getpid()}")
        private.write_private(partial, url + "\n")
        partial.replace(path)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / ADDRESS_FILE).unlink()
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None


def claim(data_dir: Path) -> FolderClaim:
    """Lock `data_dir` for this process (creating it, private, if needed); FolderInUse if an engine holds it, and
    ConfigError if others may reach the folder (engine.core.private), before anything is written into it."""
    private.require_private_folder(data_dir)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, private.FILE_MODE)
    os.fchmod(fd, private.FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderInUse(_in_use(data_dir)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return FolderClaim(data_dir, fd)


def published_address(data_dir: Path) -> str | None:
    """The address the engine on `data_dir` published, if any (it may be stale after a crash)."""
    try:
        return (data_dir / ADDRESS_FILE).read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def _in_use(data_dir: Path) -> str:
    try:
        pid = (data_dir / LOCK_FILE).read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        pid = "unknown"
    where = published_address(data_dir) or "an address not yet published"
    return (f"the data folder {data_dir} is in use by the engine with pid {pid} at {where}; "
            "stop it first, or give this one another --data")
