"""An event's trace, for the TUI's detail view (`GET /api/v1/events/{id}`): the fields rules test, which rules ran on
it (from the durable `run_trace`: every state with what it said, and the actions whose effect is done), and, for
every other rule of its kind running now, the first clause of its trigger that the event fails.

Read from the store, so it answers after a restart too. The rules that did not run are judged against the rules
running now: after a reload, a rule may be listed as not matching an event it was never offered.
"""

from __future__ import annotations

import json
import sqlite3

from dsl import CompiledRule, EventGraph
from dsl.describe import describe
from engine.client.snapshots import EventTrace, RuleTrace, TraceStep
from engine.core.events import CommandData, Event
from engine.core.ids import time_prefix
from engine.runs import decide
from engine.runs.run import event_view

SHOWN_VALUE_CHARS = 200  # a field is shown, not dumped: long texts are cut


def event_trace(conn: sqlite3.Connection, event_id: str, graph: EventGraph) -> EventTrace | None:
    """The trace of the journaled event `event_id`, or None when the journal has no such event."""
    row = conn.execute("SELECT body FROM events WHERE id = ?", (event_id,)).fetchone()
    if row is None:
        return None
    event = Event.model_validate_json(row["body"])
    fields = event.fields()
    if isinstance(event.data, CommandData):
        fields.update(decide.command_fields(event, event.data, graph))
    steps: dict[tuple[str, str], list[TraceStep]] = {}
    for step in conn.execute("SELECT * FROM run_trace WHERE event_id = ? ORDER BY rowid", (event_id,)):
        steps.setdefault((step["rule"], step["run_id"]), []).append(
            TraceStep(state=step["state"], time=step["time"], detail=step["detail"]))
    rules = {rule.name: rule for rule in graph.rules}
    traces = [RuleTrace(rule=name, location=rules[name].location if name in rules else "(no longer loaded)",
                        matched=True, run_id=run_id, steps=states,
                        effects=_effects(conn, run_id, rules.get(name), time_prefix(event.time)))
              for (name, run_id), states in steps.items()]
    ran = {name for name, _ in steps}
    traces += [RuleTrace(rule=rule.name, location=rule.location, matched=False,
                         failed_clause=rule.explain(fields) or "(it matches now: the rules changed since)")
               for rule in graph.of_kind(event.kind) if rule.name not in ran]
    return EventTrace(event=event_view(event), fields={key: _show(value) for key, value in sorted(fields.items())},
                      rules=traces)


def _effects(conn: sqlite3.Connection, run_id: str, rule: CompiledRule | None, ids_from: str) -> list[str]:
    """What a run did: its messages (the outbox rows it queued, with their delivery status), its tasks, and the
    actions claimed once (engine.runs.actions) in the rule's words. A task's id is derived from its event's time, so
    `ids_from` (that time's id prefix) narrows the tasks to read to that millisecond's."""
    done = [f"{row['key'].split('/', 1)[0]} to {row['platform']}:{row['chat']} ({row['status']})"
            for row in conn.execute("SELECT key, platform, chat, status FROM outbox WHERE key >= ? AND key < ? "
                                    "OR key >= ? AND key < ? ORDER BY seq",
                                    (f"notify/{run_id}/", f"notify/{run_id}0", f"reply/{run_id}/",
                                     f"reply/{run_id}0"))]
    done += [f"task {row['task_id']} ({row['status']})" for row in conn.execute(
        "SELECT task_id, status FROM tasks WHERE task_id >= ? AND task_id < ? AND json_extract(body, '$.run_id') = ?",
        (ids_from, ids_from + "~", run_id))]
    for row in conn.execute("SELECT key, time FROM effects WHERE key >= ? AND key < ? ORDER BY key",
                            (f"{run_id}/", f"{run_id}0")):
        index = int(row["key"].rsplit("/", 1)[1])
        what = describe(rule.actions[index]) if rule is not None and index < len(rule.actions) else f"action {index}"
        done.append(f"{what} (done {row['time']} UTC)")
    return done


def _show(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 1] + "…"
