"""The engine's exception hierarchy.

    HeraldError
    ├── ConfigError          the config file is missing keys, has unknown ones, or bad values
    ├── RulesError           the rules do not compile (carries the diagnostics)
    ├── SandboxError         a sandboxed run could not be carried out
    │   └── SandboxUnavailable   Podman, its service, the sandbox user or the image is missing
    ├── AuditError           the audit chain is broken (carries the first bad entry)
    ├── AuthError            a token, signature or button did not verify (the message says why)
    ├── DurabilityError      a commit could not be made durable (the fsync failed); its writes may not survive a
    │                        crash
    │   └── StorageFull      the data disk is full or failing: writes fail until it takes them again
    ├── Busy                 the engine cannot accept more work right now; retry later
    ├── CommandTextError     chat text that cannot be a command (engine.intake.commands)
    ├── CronError            a schedule that is not a valid cron expression (engine.runs.schedules)
    ├── Refused              a webhook request refused before its body was read (integrations.webhook.auth)
    ├── DeliveryError        a message could not be delivered (engine.delivery.connector: RateLimited,
    │                        Unavailable, Rejected)
    └── QueueError           the Redis task queue cannot be used as configured (no signing key, a Redis that needs
        │                    no password, credentials or a TLS certificate refused)
        └── EntryRefused     an entry read from Redis is unsigned, altered, malformed or from the wrong worker
"""

from __future__ import annotations


class HeraldError(Exception):
    """Root of every error the engine raises on purpose."""


class ConfigError(HeraldError):
    """The config file could not be read or validated."""


class RulesError(HeraldError):
    """The rule files did not compile; `diagnostics` holds every problem found."""

    def __init__(self, message: str, diagnostics: list) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics


class SandboxError(HeraldError):
    """A sandboxed run failed for a reason other than the script's own exit code."""


class SandboxUnavailable(SandboxError):
    """The sandbox cannot run anything; the message says what is missing and how to fix it."""


class AuditError(HeraldError):
    """The audit chain does not verify."""


class DurabilityError(HeraldError):
    """The database could not make a commit durable: the writes in it may be lost by a crash or power cut."""


class StorageFull(DurabilityError):
    """The data disk cannot take writes (full, out of quota, failing): nothing new is accepted until it can."""


class AuthError(HeraldError):
    """A credential was refused: expired, forged, replayed, revoked or for another purpose."""


class Busy(HeraldError):
    """The engine cannot accept more work right now; the sender should retry after `retry_after_s` seconds."""

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueError(HeraldError):
    """The Redis task queue cannot be used as configured; the message says what to change."""


class EntryRefused(QueueError):
    """An entry read from Redis was not written by Herald (no or a wrong signature) or does not fit what Herald
    knows (a result from a worker that does not hold the task); the message says why, without any secret."""
