"""The event graph: its index gives exactly what a brute-force scan gives, in file order, at a flat cost."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from dsl import Catalog, CompiledRule, EventGraph, compile_sources
from dsl.graph import Condition

SEVERITIES = ("info", "warning", "error", "critical")
SERVICES = tuple(f"svc{i}" for i in range(8))
COMMANDS = tuple(f"cmd{i}" for i in range(12))
CATALOG = Catalog(teams=frozenset({"ops"}), roles=frozenset({"admin"}), scripts=frozenset({"job.sh"}))


@dataclass(frozen=True)
class Spec:
    """What the generator meant a rule to match, written down independently of the compiler."""

    kind: str
    required: dict[str, str]  # field -> value; an absent filter is an absent key

    def oracle(self, kind: str, fields: Mapping[str, object]) -> bool:
        return kind == self.kind and all(
            name in fields and fields[name] == v for name, v in self.required.items()
        )


def random_rule(rng: random.Random, number: int) -> tuple[str, Spec]:
    """One rule as text (one-liner or block, filters in random order) and its spec."""
    if rng.random() < 0.4:
        name = rng.choice(COMMANDS)
        trigger, spec = f"on command {name}", Spec("command", {"command.name": name})
    else:
        words: list[str] = []
        required = {"alert.status": "firing"}
        status = rng.choice([None, "firing", "resolved"])
        if status is not None:
            words.append(status)
            required["alert.status"] = status
        if rng.random() < 0.6:
            severity = rng.choice(SEVERITIES)
            words.append(f"severity {severity}")
            required["alert.severity"] = severity
        if rng.random() < 0.5:
            service = rng.choice(SERVICES)
            words.append(f"from {service}")
            required["alert.service"] = service
        rng.shuffle(words)
        trigger, spec = " ".join(["on alert", *words]), Spec("alert", required)
    action = rng.choice(
        ["notify ops", "notify ops with buttons", "run job.sh timeout 5m", "run job.sh retry 2 backoff 1m"]
    )
    if rng.random() < 0.5:
        return f"{trigger} {action}\n", spec
    return f"rule r{number}:\n  {trigger}\n  {action}\n\n", spec


def random_fields(rng: random.Random) -> tuple[str, dict[str, object]]:
    """An event, sometimes with fields missing, unknown values, or values of another type."""
    if rng.random() < 0.35:
        fields: dict[str, object] = {"command.name": rng.choice([*COMMANDS, "nope"]), "command.args": ()}
        kind = "command"
    else:
        fields = {
            "alert.status": rng.choice(["firing", "resolved"]),
            "alert.severity": rng.choice([*SEVERITIES, "fatal"]),
            "alert.service": rng.choice([*SERVICES, "other"]),
            "alert.fingerprint": f"fp{rng.randrange(100)}",
            "alert.labels": {"env": "prod"},
        }
        kind = "alert"
    for name in list(fields):
        if rng.random() < 0.12:
            del fields[name]
    if rng.random() < 0.05:
        fields["alert.service"] = ["unhashable"]
    if rng.random() < 0.05:
        kind = rng.choice(["button", "alert", "command"])
    return kind, fields


def generated(seed: int, count: int) -> tuple[EventGraph, list[Spec]]:
    rng = random.Random(seed)
    files: list[tuple[str, str]] = []
    specs: list[Spec] = []
    for file_number in range(4):
        texts = []
        for number in range(count // 4):
            text, spec = random_rule(rng, file_number * 1000 + number)
            texts.append(text)
            specs.append(spec)
        files.append((f"rules/{'dcba'[file_number]}.rules", "".join(texts)))
    result = compile_sources(files, CATALOG)
    assert result.graph is not None, result.render_all()
    return result.graph, specs


def test_index_matches_brute_force_over_generated_rules() -> None:
    for seed in range(3):
        graph, specs = generated(seed, 400)
        assert len(graph.rules) == len(specs) == 400
        rng = random.Random(seed + 100)
        hits = 0
        for _ in range(600):
            kind, fields = random_fields(rng)
            expected = [
                rule for rule, spec in zip(graph.rules, specs, strict=True) if spec.oracle(kind, fields)
            ]
            brute = [rule for rule in graph.rules if rule.kind == kind and rule.matches(fields)]
            got = graph.match(kind, fields)
            assert got == expected == brute, (kind, fields)
            hits += len(got)
        assert hits > 500  # the events really do hit rules, so the comparison means something


def test_results_keep_file_order_with_files_in_the_order_given() -> None:
    # "b" is given before "a": file order is the order of the sources, not of the names.
    result = compile_sources(
        [
            ("rules/b.rules", "on alert notify ops\non alert severity critical notify ops\n"),
            ("rules/a.rules", "on alert from db notify ops\non alert severity critical from db notify ops\n"),
        ],
        CATALOG,
    )
    assert result.graph is not None
    fields = {"alert.status": "firing", "alert.severity": "critical", "alert.service": "db"}
    assert [r.name for r in result.graph.match("alert", fields)] == [
        "rules/b.rules:1",
        "rules/b.rules:2",
        "rules/a.rules:1",
        "rules/a.rules:2",
    ]


def test_commands_lists_every_rule_of_each_command_in_file_order() -> None:
    result = compile_sources(
        [
            ("rules/one.rules", "on command backup run job.sh\non command deploy notify ops\n"),
            ("rules/two.rules", "rule backup-too:\n  on command backup\n  notify ops\n"),
        ],
        CATALOG,
    )
    assert result.graph is not None
    commands = result.graph.commands()
    assert {name: [r.name for r in rules] for name, rules in commands.items()} == {
        "backup": ["rules/one.rules:1", "backup-too"],
        "deploy": ["rules/one.rules:2"],
    }
    fired = result.graph.match("command", {"command.name": "backup"})
    assert [r.name for r in fired] == ["rules/one.rules:1", "backup-too"]


class CountingFields(Mapping[str, object]):
    """Fields that count how often the graph reads them: a stand-in for matching cost."""

    def __init__(self, data: dict[str, object]) -> None:
        self.data = data
        self.reads = 0

    def __getitem__(self, key: str) -> object:
        self.reads += 1
        return self.data[key]

    def get(self, key: str, default: object = None) -> object:
        self.reads += 1
        return self.data.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def reads_to_match(rule_count: int) -> int:
    lines = [f"on alert severity critical from service{i} notify ops" for i in range(rule_count)]
    lines += [f"on command cmd{i} notify ops" for i in range(rule_count)]
    result = compile_sources([("rules/many.rules", "\n".join(lines))], CATALOG)
    assert result.graph is not None
    alert = CountingFields(
        {"alert.status": "firing", "alert.severity": "critical", "alert.service": "service7"}
    )
    command = CountingFields({"command.name": "cmd7"})
    assert len(result.graph.match("alert", alert)) == 1
    assert len(result.graph.match("command", command)) == 1
    return alert.reads + command.reads


def test_matching_cost_stays_flat_as_rules_grow() -> None:
    assert reads_to_match(10) == reads_to_match(2000)


def test_compiled_rule_matches_is_a_closure_over_its_conditions() -> None:
    rule = CompiledRule(
        name="r",
        location="x:1",
        kind="alert",
        command=None,
        required_roles=(),
        actions=(),
        fingerprint="0",
        conditions=(Condition("alert.service", "db"), Condition("alert.status", "firing")),
    )
    assert rule.matches({"alert.service": "db", "alert.status": "firing"})
    assert not rule.matches({"alert.service": "db"})
    assert not rule.matches({"alert.service": None, "alert.status": "firing"})
    assert EventGraph([rule]).match("alert", {"alert.service": "db", "alert.status": "firing"}) == [rule]
    assert EventGraph([]).match("alert", {}) == []
