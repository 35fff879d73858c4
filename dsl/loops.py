"""Loops through `emit`: rule A emits what rule B is `on`, B emits what A is `on` ... is a compile error.

The rule-to-rule graph is known at compile time because `emit` names a fixed event. Each loop is reported
once, at the `emit` of the loop's first rule in file order, naming every hop with its file:line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from dsl.ast import Emit, EventTrigger, Rule
from dsl.diagnostics import Diagnostic


def emit_loops(rules: Sequence[Rule]) -> Iterator[Diagnostic]:
    listeners: dict[str, list[int]] = {}
    for index, rule in enumerate(rules):
        if isinstance(rule.trigger, EventTrigger):
            listeners.setdefault(rule.trigger.name, []).append(index)
    edges: dict[int, list[tuple[Emit, int]]] = {}
    for index, rule in enumerate(rules):
        for action in rule.actions:
            if isinstance(action, Emit):
                for target in listeners.get(action.event, ()):
                    edges.setdefault(index, []).append((action, target))
    reported: set[frozenset[int]] = set()
    for start in sorted(edges):
        for cycle in _cycles_from(start, edges):
            members = frozenset(index for index, _ in cycle)
            if members in reported or min(members) != start:
                continue
            reported.add(members)
            hops = [f"'{_name(rules[index])}' ({rules[index].span.location}) emits '{emit.event}'"
                    for index, emit in cycle]
            first_emit = cycle[0][1]
            yield Diagnostic(
                first_emit.event_span or first_emit.span,
                "these rules trigger each other forever: " + " -> ".join(hops) + f" -> back to '{_name(rules[start])}'",
                hint="break the loop: emit another event, or leave one of the emits out",
            )


def _cycles_from(start: int, edges: dict[int, list[tuple[Emit, int]]]) -> Iterator[list[tuple[int, Emit]]]:
    """Simple cycles through `start` (depth-first, each found once per first hop), as (rule, its emit) hops."""
    path: list[tuple[int, Emit]] = []
    on_path: set[int] = set()

    def walk(node: int) -> Iterator[list[tuple[int, Emit]]]:
        on_path.add(node)
        for emit, target in edges.get(node, ()):
            path.append((node, emit))
            if target == start:
                yield list(path)
            elif target not in on_path and target > start:
                yield from walk(target)
            path.pop()
        on_path.discard(node)

    yield from walk(start)


def _name(rule: Rule) -> str:
    return rule.name if rule.name is not None else rule.span.location
