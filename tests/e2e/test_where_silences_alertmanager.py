"""A rule's `silence alert where LABEL = VALUE ... for D` with a real Alertmanager (issue 19): the silence is made
there too, with the same equality matchers and end; Herald takes it as its own (not as one made in Alertmanager);
expired in Alertmanager, Herald's silence ends too and the alert is heard again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine.testing import ChatClient
from tests.e2e.stateful.support import audit
from tests.e2e.test_silence_sync import RULES, call, edited, eventually, fire, linked
from tests.support import ALICE_TOKEN, chat_url, http_url

HUSH_RULES = RULES + '''
rule hush:
  on command hush <service: word>
  silence alert where service = {command.service} and severity = "warning" for 2h
'''


async def test_a_where_silence_is_made_in_alertmanager_and_ends_when_expired_there(
        tmp_path: Path, config_file: Path) -> None:
    async with linked(tmp_path, config_file, HUSH_RULES) as (engine, am), \
            ChatClient.connect(chat_url(engine), ALICE_TOKEN) as alice:
        note, fingerprint = await fire(am, alice)
        await alice.say("/hush db")
        await alice.wait_for(edited(note, lambda text: "🔕 Silenced by alice until" in text), timeout=30)

        [silence] = await call("GET", f"{am.url}/api/v2/silences")
        assert silence["status"]["state"] == "active" and silence["createdBy"] == "alice"
        assert sorted((m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]) == [
            ("service", "db", True, False), ("severity", "warning", True, False)]
        ends = datetime.fromisoformat(silence["endsAt"].replace("Z", "+00:00"))
        assert timedelta(hours=1, minutes=55) < ends - datetime.now(UTC) <= timedelta(hours=2)
        [listed] = (await call("GET", f"{http_url(engine)}/api/v1/silences", token=engine.api_token))["silences"]
        assert listed["alertmanager_id"] == silence["id"]

        await call("DELETE", f"{am.url}/api/v2/silence/{silence['id']}")  # expired in Alertmanager's UI
        [expired] = await eventually(lambda: audit(engine, "silence.expired"), "Herald's silence ending")
        assert expired["silence"] == listed["id"] and expired["reason"] == "expired in Alertmanager"
        await alice.wait_for(edited(note, lambda text: "🔕" not in text), timeout=30)
        view = await call("GET", f"{http_url(engine)}/api/v1/alerts/{fingerprint}", token=engine.api_token)
        assert view["muted_until"] is None
        # all the while it was Herald's own, never "a silence made in Alertmanager"
        assert await audit(engine, "silence.upstream_seen") == []
        assert (await call("GET", f"{http_url(engine)}/api/v1/silences", token=engine.api_token))["silences"] == []
