"""docs/chat-protocol.md names everything Herald's chat sends: every frame type, every welcome field, every error
code and every run state, read from the code that sends them (so a new one cannot be added undocumented)."""

from __future__ import annotations

import re
import typing

from engine.intake.intake import RefusalCode
from engine.runs.run import RunState
from tests.support import REPO

DOC = (REPO / "docs" / "chat-protocol.md").read_text(encoding="utf-8")
CHAT = "\n".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "integrations" / "chat").glob("*.py")))


def test_every_frame_type_the_server_sends_is_documented() -> None:
    sent = set(re.findall(r'"type": "(\w+)"', CHAT)) | set(re.findall(r'frame\["type"\] = "(\w+)"', CHAT))
    sent -= {"auth", "message", "press"}  # what clients send; the server only reads these
    assert {"welcome", "ack", "progress", "output", "result", "reply", "notification", "notification_edit",
            "error", "caught_up"} <= sent
    missing = sorted(kind for kind in sent if f'"type": "{kind}"' not in DOC)
    assert missing == []


def test_every_welcome_field_is_documented() -> None:
    welcome = re.search(r'welcome = \{(.*?)\}', CHAT, re.S)
    assert welcome is not None
    fields = set(re.findall(r'"(\w+)":', welcome.group(1))) | set(re.findall(r'welcome\["(\w+)"\]', CHAT))
    assert {"session", "account", "principal", "roles", "rooms", "refused_rooms", "rooms_note"} <= fields
    assert sorted(f for f in fields if f"`{f}`" not in DOC and f'"{f}"' not in DOC) == []


def test_every_error_code_is_documented() -> None:
    codes = set(typing.get_args(RefusalCode)) | set(re.findall(r'error_frame\(\s*"(\w+)"', CHAT))
    codes.discard("not_command")  # only the API stream takes commands alone; the chat turns text into messages
    assert {"unauthorized", "bad_request", "button_refused", "busy", "rate_limited"} <= codes
    assert sorted(code for code in codes if f"| `{code}` |" not in DOC) == []


def test_every_run_state_is_documented() -> None:
    assert sorted(state.value for state in RunState if f"| `{state.value}` |" not in DOC) == []
