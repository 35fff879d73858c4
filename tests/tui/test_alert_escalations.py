"""The Alerts tab and an alert's detail (Enter) show its escalation steps (issue 19): to whom, when last, how many
times, against a real engine whose clock the test moves through an escalation policy, and again after a restart. The
same steps are in `GET /api/v1/alerts/{fingerprint}`."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from textual.widgets import DataTable, Static

from engine.client.remote import RemoteEngineClient
from engine.core.config import Config, load_config
from engine.core.timers import ManualClock
from tests.e2e.stateful.support import DAVE_TOKEN, START, engine_for, post_alert, settle, tick
from tests.support import http_url
from tests.tui.test_restart import rows, until
from tui import make_app

POLICY_RULES = '''
team managers = @dave

rule policy:
  on alert from db
  notify ops with buttons ack
  escalate to ops after 5m, to managers after 15m, repeat every 30m until acknowledged
'''


def _with_dave(config_file: Path) -> Config:
    config_file.write_text(config_file.read_text() + f'\n[principals.dave]\nroles = ["admin"]\n'
                                                      f'chat_tokens = ["{DAVE_TOKEN}"]\n')
    return load_config(config_file)


async def test_the_alerts_tab_and_the_alerts_detail_show_its_escalation_steps(config_file: Path) -> None:
    clock = ManualClock(START)  # 12:00 UTC
    config = _with_dave(config_file)
    async with engine_for(config, POLICY_RULES, clock) as engine:
        fingerprint = await post_alert(engine, "DiskFull")
        await settle(engine)
        await tick(engine, clock, 5 * 60 + 1)  # ops at 12:05
        await tick(engine, clock, 10 * 60)  # managers at 12:15
        await tick(engine, clock, 30 * 60)  # managers again at 12:45

        async with aiohttp.ClientSession() as http, http.get(
                f"{http_url(engine)}/api/v1/alerts/{fingerprint}",
                headers={"Authorization": f"Bearer {engine.api_token}"}) as response:
            assert response.status == 200, await response.text()
            steps = (await response.json())["escalations"]
        assert [(s["target"], s["times"]) for s in steps] == [("ops", 1), ("managers", 2)]
        assert steps[1]["at"].startswith("2026-06-01T12:45")

        app = make_app(RemoteEngineClient(http_url(engine), engine.api_token))
        async with app.run_test(size=(160, 40)) as pilot:
            await pilot.press("6")
            await until(pilot, lambda: any("escalated to ops, managers ×2" in row for row in rows(app, "alerts")),
                        "the escalations on the alert's row")

            table = app.query_one("#alerts-table", DataTable)
            table.move_cursor(row=next(i for i, row in enumerate(rows(app, "alerts")) if "DiskFull" in row))
            await pilot.press("enter")
            await until(pilot, lambda: bool(app.screen.query("#detail")), "the alert's detail")
            text = str(app.screen.query_one("#detail", Static).content)
            assert f"fingerprint {fingerprint}" in text
            assert "Escalations (2):\n  to ops, last at 06-01 12:05:01, once\n" \
                   "  to managers, last at 06-01 12:45:01, 2 times" in text
            assert "Rules that ran" in text  # the alert's event trace follows

    async with engine_for(config, POLICY_RULES, clock) as engine:  # after a restart, from the alert's record
        app = make_app(RemoteEngineClient(http_url(engine), engine.api_token))
        async with app.run_test(size=(160, 40)) as pilot:
            await pilot.press("6")
            await until(pilot, lambda: any("escalated to ops, managers ×2" in row for row in rows(app, "alerts")),
                        "the escalations on the alert's row after a restart")
