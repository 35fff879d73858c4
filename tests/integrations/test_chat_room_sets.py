"""Idle chat sessions in the same rooms share one frozenset of them, up to a bound (clients name rooms, so an
unbounded cache would be theirs to grow)."""

from __future__ import annotations

import pytest

from integrations.chat import connector
from integrations.chat.connector import ROOM_SETS_SHARED, room_set


def test_sessions_in_the_same_rooms_share_one_set() -> None:
    first, second = room_set(["ops", "db"]), room_set(iter(["db", "ops"]))
    assert first == frozenset({"ops", "db"}) and first is second
    assert room_set(["ops"]) is not first and room_set([]) == frozenset()


def test_past_the_bound_each_gets_its_own_and_the_cache_stops_growing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connector, "_ROOM_SETS", {})  # the other tests' sessions keep theirs
    for n in range(ROOM_SETS_SHARED + 10):
        room_set([f"room-{n}"])
    assert len(connector._ROOM_SETS) == ROOM_SETS_SHARED
    late = [f"late-{n}" for n in range(3)]
    assert room_set(late) == frozenset(late) and room_set(late) is not room_set(late)
