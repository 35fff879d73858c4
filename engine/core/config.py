"""Herald's one config file (TOML), read only through the pydantic model below.

Every key has a default, so `herald run` works with no file at all. Unknown keys are errors (`extra="forbid"`), so a
typo never silently falls back to a default. Relative paths are resolved against the config file's folder (or the
working directory when there is no file).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from dsl.catalog import DEFAULT_SEVERITIES
from dsl.diagnostics import did_you_mean
from engine.core.errors import ConfigError
from engine.sandbox.runner import SandboxConfig

DEFAULT_CONFIG_NAME = "herald.toml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_ADDRESS = re.compile(r"[a-z][a-z0-9_-]*:\S.*")


def _platform_addresses(values: list[str]) -> list[str]:
    for value in values:
        if not _ADDRESS.fullmatch(value):
            raise ValueError(f"{value!r} is not an address like 'telegram:1111111' or 'slack:C012AB3CD'")
    return values


class PrincipalConfig(_Strict):
    """A person: their roles, the tokens their Herald-chat clients authenticate with, and their accounts on other
    platforms (`telegram:1111111`, `slack:U2147483697`, `discord:80351110224678912`, `matrix:@alice:example.org`):
    each acts for this person and is where their notifications go."""

    roles: list[str] = Field(default_factory=list)
    chat_tokens: list[SecretStr] = Field(default_factory=list)
    accounts: list[str] = Field(default_factory=list)

    _accounts_ok = field_validator("accounts")(_platform_addresses)


class TeamConfig(_Strict):
    """A notification target: principals (wherever each can be reached), Herald-chat rooms, and conversations on
    other platforms (`targets = ["telegram:-1001234567", "slack:C012AB3CD"]`)."""

    members: list[str] = Field(default_factory=list)
    chat_rooms: list[str] = Field(default_factory=list)
    targets: list[str] = Field(default_factory=list)

    _targets_ok = field_validator("targets")(_platform_addresses)


# The team a fresh install notifies (the default rules say `notify ops`): everyone who joins chat room "ops".
DEFAULT_TEAMS = {"ops": TeamConfig(chat_rooms=["ops"])}


class HttpConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=0, le=65535)
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    # Serve HTTPS and WSS (TLS 1.2 or newer) with this certificate chain and key (PEM files).
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("http.tls_cert and http.tls_key go together")
        return self


class QueueConfig(_Strict):
    """`[queue]`: with a Redis URL, tasks run in `herald worker` processes instead of inside the engine.

    Every entry Herald puts into Redis is signed with the signing key (engine.tasks.signing), which never goes to
    Redis: set exactly one of `signing_key`, `signing_key_env` (the name of an environment variable holding it) or
    `signing_key_file`. The Redis password may be in the URL (`redis://user:password@host`) or, to keep it out of
    this file, in `redis_password_env` / `redis_password_file`. `rediss://` URLs use TLS, verified against
    `tls_ca_file` (default: the system's CAs).
    """

    redis_url: str | None = None
    tasks_stream: str = "herald:tasks"
    results_stream: str = "herald:results"
    claim_idle_s: float = Field(default=30.0, gt=0)
    signing_key: SecretStr | None = None
    signing_key_env: str | None = None
    signing_key_file: Path | None = None
    redis_username: str | None = None  # an ACL user (or in the URL)
    redis_password_env: str | None = None
    redis_password_file: Path | None = None
    tls_ca_file: Path | None = None  # the CA bundle that signed the server's certificate (rediss://)
    tls_cert_file: Path | None = None  # a client certificate, for a Redis with tls-auth-clients yes
    tls_key_file: Path | None = None
    allow_unauthenticated: bool = False  # accept a Redis that lets anyone in without a password
    reconnect_max_s: float = Field(default=5.0, gt=0)  # the longest wait between two attempts during an outage

    @model_validator(mode="after")
    def _one_key_each(self) -> QueueConfig:
        keys = [name for name in ("signing_key", "signing_key_env", "signing_key_file") if getattr(self, name)]
        if len(keys) > 1:
            raise ValueError(f"set one of {', '.join(keys)}, not several")
        if self.redis_url and not keys:
            raise ValueError("with redis_url set, a signing key is needed: set signing_key, signing_key_env or "
                             "signing_key_file (herald init writes one; every worker needs the same key)")
        if self.redis_password_env and self.redis_password_file:
            raise ValueError("set redis_password_env or redis_password_file, not both")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        tls = [name for name in ("tls_ca_file", "tls_cert_file") if getattr(self, name) is not None]
        if tls and not (self.redis_url or "").startswith("rediss://"):
            raise ValueError(f"{tls[0]} is set but redis_url does not start with rediss:// (TLS)")
        return self

    def resolved(self, base: Path) -> QueueConfig:
        """A copy whose file paths are absolute, relative ones taken from `base`."""
        names = ("signing_key_file", "redis_password_file", "tls_ca_file", "tls_cert_file", "tls_key_file")
        return self.model_copy(update={name: (base / getattr(self, name)).resolve()
                                       for name in names if getattr(self, name) is not None})


# A severity is written in rules as a word (`severity >= warning`), so it must be one the rule language reads.
_SEVERITY = re.compile(r"[a-z0-9_][a-z0-9_-]*")


class AlertsConfig(_Strict):
    """`[alerts]`: the severity scale rules compare on, names sources use for its steps, and who hears of an alert
    no rule handled."""

    severities: list[str] = Field(default_factory=lambda: list(DEFAULT_SEVERITIES))  # least to most severe
    # What a source may call a step of the scale (`page = "critical"`): an incoming alert's severity is translated
    # when it arrives, so rules only ever see the scale's own words.
    severity_aliases: dict[str, str] = Field(default_factory=dict)
    # A team that gets a plain notification of every firing alert no rule matched (None: a warning in the log).
    unmatched: str | None = None
    # Alertmanager's address (http://host:9093): a Mute on one of its alerts (or a rule's silence) becomes a silence
    # there too, expired when the alert resolves (engine/runs/upstream_silences.py), and silences changed or made
    # there are followed (engine/runs/silence_sync.py). None: mutes stay in Herald.
    alertmanager_url: AnyHttpUrl | None = None
    # How often Herald reads Alertmanager's silences to follow changes made there (engine/runs/silence_sync.py).
    alertmanager_sync_s: float = Field(default=30.0, gt=0, le=3600)
    # Alert storms (engine/delivery/storm.py): beyond `storm_threshold` alert notifications to one team within
    # `storm_window_s`, further ones are listed in one digest message per conversation, edited as they arrive.
    # 0 turns storm digests off.
    storm_threshold: int = Field(default=10, ge=0)
    storm_window_s: float = Field(default=60.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _scale(self) -> AlertsConfig:
        problems = []
        if not self.severities:
            problems.append("severities: name at least one severity")
        for name in self.severities:
            if not _SEVERITY.fullmatch(name):
                problems.append(f"severities: {name!r} is not a lowercase word (letters, digits, '_', '-')")
        repeated = sorted({name for name in self.severities if self.severities.count(name) > 1})
        if repeated:
            problems.append(f"severities: {', '.join(repeated)} named twice")
        for alias, target in self.severity_aliases.items():
            if alias != alias.lower():
                problems.append(f"severity_aliases.{alias}: write aliases in lowercase (severities arriving "
                                "are compared in lowercase)")
            if alias in self.severities:
                problems.append(f"severity_aliases.{alias}: {alias!r} is already on the scale")
            if target not in self.severities:
                problems.append(f"severity_aliases.{alias}: {target!r} is not on the scale "
                                f"({', '.join(self.severities)})")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Config(_Strict):
    data_dir: Path = Path(".herald")
    rules_dir: Path = Path("rules")
    scripts_dir: Path | None = None  # default: <rules_dir>/scripts, so a rules folder carries its own whitelist
    roles: list[str] = Field(default_factory=lambda: ["admin", "operator", "viewer"])
    principals: dict[str, PrincipalConfig] = Field(default_factory=dict)
    # Teams the config file names. With none, the engine offers DEFAULT_TEAMS (see `default_teams`).
    teams: dict[str, TeamConfig] = Field(default_factory=dict)
    http: HttpConfig = Field(default_factory=HttpConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    workers: int = Field(default=2, ge=1, le=64)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    # Accepted events waiting for the dispatcher; beyond this, webhooks get 503 + Retry-After and chat "busy".
    max_queued_events: int = Field(default=10_000, ge=1)
    # Below this much free space on the data folder's disk, new events are refused (503 + Retry-After, chat "busy")
    # so that what was accepted can still be handled; 0 refuses only once writes fail.
    min_free_disk_mb: int = Field(default=64, ge=0)
    # Handled events, their run traces and effects, and finished tasks older than this are forgotten (once an hour);
    # 0 keeps them for ever. The audit log is kept until archived (engine.security.audit_archive).
    keep_history_days: int = Field(default=30, ge=0)
    # Who may press the built-in Acknowledge and Mute buttons: a person with any one of these roles (a rule
    # `on button mute require role admin` tightens it further). Checked before the button is used up.
    button_roles: list[str] = Field(default_factory=lambda: ["admin", "operator"])
    api_principal: str | None = None  # whom commands sent with the local API token act as, unless they say
    # Timers that came due while Herald was down (escalations, schedules) wait this long after a start, so chat
    # clients reconnect and connectors attach first and the catch-up delivers what they send.
    start_grace_s: float = Field(default=5.0, ge=0, le=300)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    # Each integration's own section, validated by that integration's config model when it is set up.
    integrations: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        problems = []
        known_roles = set(self.roles)
        for name, principal in self.principals.items():
            for role in principal.roles:
                if role not in known_roles:
                    problems.append(f"principals.{name}.roles: unknown role {role!r} (known: {sorted(known_roles)})")
        for name, team in self.teams.items():
            for member in team.members:
                if member not in self.principals:
                    problems.append(f"teams.{name}.members: unknown principal {member!r}")
        if "button_roles" in self.model_fields_set or "roles" not in self.model_fields_set:
            for role in self.button_roles:
                if role not in known_roles:
                    problems.append(f"button_roles: unknown role {role!r} (known: {sorted(known_roles)})")
        unmatched = self.alerts.unmatched
        if unmatched is not None and unmatched not in (self.teams or self.default_teams()):
            problems.append(f"alerts.unmatched: unknown team {unmatched!r} (known: "
                            f"{sorted(self.teams or self.default_teams())})")
        if self.api_principal is not None and self.api_principal not in self.principals:
            problems.append(f"api_principal: unknown principal {self.api_principal!r}")
        seen: dict[str, str] = {}
        for name, principal in self.principals.items():
            for token in principal.chat_tokens:
                secret = token.get_secret_value()
                if len(secret) < 16:
                    problems.append(f"principals.{name}.chat_tokens: a token must be at least 16 characters")
                if secret in seen:
                    problems.append(f"principals.{name}.chat_tokens: a token is shared with {seen[secret]!r}")
                seen[secret] = name
        owners: dict[str, str] = {}
        for name, principal in self.principals.items():
            for account in principal.accounts:
                if account in owners:
                    problems.append(f"principals.{name}.accounts: {account!r} is already an account of "
                                    f"{owners[account]!r}")
                owners[account] = name
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def account_owner(self, platform: str, account: str) -> str | None:
        """The principal whose configured `accounts` include this one."""
        wanted = f"{platform}:{account}"
        for name, principal in self.principals.items():
            if wanted in principal.accounts:
                return name
        return None
    @property
    def scripts_folder(self) -> Path:
        """The scripts whitelist: `scripts_dir`, else `<rules_dir>/scripts` (what `resolved` fills in)."""
        return self.scripts_dir if self.scripts_dir is not None else self.rules_dir / "scripts"

    def default_teams(self) -> dict[str, TeamConfig]:
        """The built-in teams: DEFAULT_TEAMS while the config file names no teams of its own. They give way to
        what a user writes: a rule file's `team ops = ...` replaces the default `ops` instead of clashing with it."""
        return {} if "teams" in self.model_fields_set else dict(DEFAULT_TEAMS)

    def resolved(self, base: Path) -> Config:
        """Return a copy whose paths are absolute, relative ones taken from `base`."""
        rules = (base / self.rules_dir).resolve()
        scripts = (base / self.scripts_dir).resolve() if self.scripts_dir else rules / "scripts"
        http = self.http
        if http.tls_cert is not None and http.tls_key is not None:
            http = http.model_copy(update={"tls_cert": (base / http.tls_cert).resolve(),
                                           "tls_key": (base / http.tls_key).resolve()})
        # An integration's `*_file` and `*_dir` settings (token_file, store_dir...) are relative to `base` too.
        integrations = {name: {key: str((base / value).resolve())
                               if isinstance(value, str) and key.endswith(("_file", "_dir")) else value
                               for key, value in section.items()}
                        for name, section in self.integrations.items()}
        return self.model_copy(
            update={"data_dir": (base / self.data_dir).resolve(), "rules_dir": rules, "scripts_dir": scripts,
                    "http": http, "queue": self.queue.resolved(base), "integrations": integrations}
        )


def load_config(path: Path | None) -> Config:
    """Read and validate the config; with no path, use `herald.toml` in the working directory if it exists."""
    if path is None:
        default = Path.cwd() / DEFAULT_CONFIG_NAME
        if not default.exists():
            return Config().resolved(Path.cwd())
        path = default
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
    return config.resolved(path.parent.resolve())


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
            suggestion = did_you_mean(str(error["loc"][-1]), _keys_beside(error["loc"]))
            if suggestion is not None:
                message += f"; did you mean '{suggestion}'?"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _keys_beside(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the config model allows where `loc` points (`principals.alice.rolez` -> a principal's keys)."""
    model: Any = Config
    parts = list(loc[:-1])
    while parts:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(str(parts.pop(0)))
        if field is None:
            return []
        model = field.annotation
        if get_origin(model) is dict:  # a table of named entries: the next part is a name, not a key
            model = get_args(model)[1]
            if parts:
                parts.pop(0)
        elif get_origin(model) is not None:  # `X | None`: the model inside
            model = next((a for a in get_args(model) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []
