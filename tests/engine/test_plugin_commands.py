"""The plugin facade's command catalog: an integration sees the rules' commands with their typed arguments, and is
told when a hot reload changes them (and only then)."""

from __future__ import annotations

from pathlib import Path

from engine.core.config import Config
from engine.plugin import CommandArgument, CommandInfo, IntegrationContext, Manifest, Unload
from engine.testing import running_engine

RULES = """\
rule backup-now:
  on command backup <mode: now|nightly> [<keep: duration = 30d>] [<note: text>]
  require role admin
  reply "backing up"

on command ping reply "pong"
"""


class _Listener:
    """An integration that keeps what the facade tells it."""

    manifest = Manifest(name="listener", description="records the command catalog")

    def __init__(self) -> None:
        self.ctx: IntegrationContext | None = None
        self.changes: list[tuple[CommandInfo, ...]] = []
        self.detach_listener: object = None

    async def setup(self, ctx: IntegrationContext) -> Unload:
        self.ctx = ctx
        self.detach_listener = ctx.on_commands_changed(self.changes.append)

        async def unload() -> None:
            return None

        return unload


def _config(tmp: Path) -> Config:
    (tmp / "rules").mkdir(exist_ok=True)
    return Config.model_validate({"data_dir": "data", "rules_dir": "rules", "http": {"port": 0},
                                  "roles": ["admin"]}).resolved(tmp)


async def test_an_integration_sees_the_rule_commands_and_hears_of_reloads_that_change_them(tmp_path: Path) -> None:
    listener = _Listener()
    config = _config(tmp_path)
    rules = tmp_path / "rules" / "ops.rules"
    rules.write_text(RULES)
    async with running_engine(config, integrations=[listener]) as engine:
        assert listener.ctx is not None
        backup, ping = listener.ctx.commands()
        arguments = (CommandArgument("mode", "choice", ("now", "nightly")),
                     CommandArgument("keep", "duration", optional=True, default="2592000s"),  # 30d, as it binds
                     CommandArgument("note", "text", optional=True))
        assert backup == CommandInfo(name="backup", arguments=arguments, rules=("backup-now",),
                                     description="Runs rule backup-now")
        assert backup.usage == "/backup <mode: now|nightly> [<keep: duration>] [<note: text>]"
        assert ping.name == "ping" and ping.arguments == () and ping.rules[0].endswith("/rules/ops.rules:6")
        assert ping.description == "Runs rule ops.rules:6"  # an unnamed rule, by its file's name and line

        rules.write_text(RULES + "\non alert notify ops\n")  # no command changed: nobody is told
        assert (await engine.reload()).status == "reloaded"
        assert listener.changes == []

        rules.write_text(RULES.replace("now|nightly", "now|nightly|weekly") + "on command status reply \"ok\"\n")
        assert (await engine.reload()).status == "reloaded"
        [catalog] = listener.changes
        assert catalog == listener.ctx.commands()
        assert [c.name for c in catalog] == ["backup", "ping", "status"]
        assert catalog[0].arguments[0].choices == ("now", "nightly", "weekly")

        assert callable(listener.detach_listener)
        listener.detach_listener()  # attach returns detach: a detached callback hears nothing more
        rules.write_text(RULES)
        assert (await engine.reload()).status == "reloaded"
        assert len(listener.changes) == 1 and [c.name for c in listener.ctx.commands()] == ["backup", "ping"]
