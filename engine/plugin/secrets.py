"""Credentials in an integration's config: each one given inline, by environment variable, or by file.

    class TelegramConfig(BaseModel):
        token: SecretStr | None = None
        token_env: str | None = None
        token_file: Path | None = None

        @model_validator(mode="after")
        def _one_token(self) -> TelegramConfig:
            check_secret(self, "token")
            return self

    TelegramConfig(...).token -> read_secret(config, "token")

Exactly one of the three must be set (or none, when the secret is optional); an environment variable that is not
set or a file that cannot be read is a config error naming the key, reported by `herald check` before anything
starts. A secret file others may read is refused: a bot token gives whoever reads it the bot.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from pydantic import SecretStr


def check_secret(model: Any, name: str, *, required: bool = True) -> None:
    """Raise ValueError (a config error naming the key) unless exactly one source of secret `name` is usable."""
    given = [key for key in (name, f"{name}_env", f"{name}_file") if getattr(model, key, None) is not None]
    if len(given) > 1:
        raise ValueError(f"set one of {', '.join(given)}, not several")
    if not given:
        if required:
            raise ValueError(f"{name} is required: set {name}, {name}_env (an environment variable's name) or "
                             f"{name}_file (a file readable only by Herald's user)")
        return
    read_secret(model, name)


def read_secret(model: Any, name: str) -> str | None:
    """The secret `name` from its one source; None when it is optional and not set. ValueError says what is wrong."""
    inline = getattr(model, name, None)
    if inline is not None:
        value = inline.get_secret_value() if isinstance(inline, SecretStr) else str(inline)
    elif (env := getattr(model, f"{name}_env", None)) is not None:
        if not os.environ.get(env):
            raise ValueError(f"{name}_env: the environment variable {env} is not set")
        value = os.environ[env]
    elif (file := getattr(model, f"{name}_file", None)) is not None:
        value = _read_private(Path(file), f"{name}_file")
    else:
        return None
    value = value.strip()
    if not value:
        raise ValueError(f"{name}: empty")
    return value


def _read_private(path: Path, key: str) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{key}: {path} can be read by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    return text
