"""The data folder and its files are for Herald's own user only.

The folder holds the signing keys (in the database), the local API token and the audit key, so it must be closed to
group and others (0700) and each file in it 0600. Files are created 0600 whatever the umask (SQLite creates its
`-wal` and `-shm` files with the database file's mode, so creating that file 0600 first is enough for all three), and
files an older version left readable are closed when Herald opens them. An open folder is not silently closed: it
was opened by someone, so Herald refuses to start and says how to fix it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from engine.core.errors import ConfigError

FOLDER_MODE = 0o700
FILE_MODE = 0o600
log = logging.getLogger("herald.store")


def require_private_folder(path: Path) -> None:
    """Create the data folder (0700) if it is missing; ConfigError if group or others may read, write or enter it."""
    path.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"the data folder {path} is open to others (mode {mode:04o}): it holds signing keys and tokens, so only "
            f"Herald's own user may use it. Fix: chmod 700 {path}")


def close_files(*paths: Path | str) -> None:
    """Make each existing file 0600 when it is more open (what an older version, or a umask, left). A file that is
    not ours to change (someone verifying a copy they were given) is left as it is, with a warning."""
    for path in paths:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                os.chmod(path, FILE_MODE)
        except FileNotFoundError:
            pass
        except PermissionError:
            log.warning("%s is open to others (mode %04o) and not ours to close", path, mode)


def prepare_database(path: Path) -> None:
    """Before SQLite opens `path`: a new database is created 0600 (so its -wal and -shm will be), and older files
    are closed. Opens nothing for writing, so a read-only copy can still be read (`herald audit verify`)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
    except FileExistsError:
        pass
    close_files(path, f"{path}-wal", f"{path}-shm", f"{path}-journal")


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` (0600 even if the file existed with another mode), replacing what was there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
