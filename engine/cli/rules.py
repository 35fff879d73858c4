"""`herald fmt`, `herald test` and `herald graph`: the rule-file tools (formatting, dry runs, the compiled graph).

`test` feeds an event to the compiled graph and explains it; it runs nothing (no engine, no database, no chat).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from dsl import CompiledRule, EventGraph, FormatError, format_source, render
from engine.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from engine.core.config import load_config

EVENT_HELP = """\
An event is a JSON file ({"kind": "alert", "fields": {"alert.severity": "critical", ...}} or
{"kind": "alert", "data": {"severity": "critical", ...}}) or inline words:
  alert severity=critical service=database [status=resolved] [LABEL=VALUE ...]
  command "/backup now" as alice
  button mute [arg=1h]
  KIND FIELD=VALUE ...            (e.g. task script=backup.sh status=failed)
"""

_ALERT_FIELDS = {"status", "severity", "service", "name", "summary", "fingerprint", "url"}


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    fmt = sub.add_parser("fmt", help="rewrite rule files in canonical form",
                         description="Format every *.rules file under PATH (default: the rules folder).")
    fmt.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    fmt.add_argument("--check", action="store_true", help="change nothing; list the files that would change, exit 1")
    fmt.add_argument("--config", type=Path, metavar="FILE")
    fmt.set_defaults(handler=run_fmt)

    test = sub.add_parser("test", help="dry run: which rules an event triggers, and why the others do not",
                          description="Feed events to the compiled rules and explain; runs nothing.\n\n" + EVENT_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    test.add_argument("event", nargs="+", metavar="EVENT")
    test.add_argument("--rules", type=Path, metavar="DIR", help="rules folder (default: from the config)")
    test.add_argument("--config", type=Path, metavar="FILE")
    test.set_defaults(handler=run_test)

    graph = sub.add_parser("graph", help="print the compiled rule graph")
    graph.add_argument("--rules", type=Path, metavar="DIR", help="rules folder (default: from the config)")
    graph.add_argument("--config", type=Path, metavar="FILE")
    graph.add_argument("--dot", action="store_true", help="print Graphviz dot instead of text")
    graph.set_defaults(handler=run_graph)


# ---- fmt ----------------------------------------------------------------------------------------------------


def run_fmt(args: argparse.Namespace) -> int:
    from engine.reload.rules import display_path, rule_files

    config = load_config(args.config)
    paths = args.paths or [config.rules_dir]
    missing = [p for p in paths if not p.exists()]
    for path in missing:
        print(f"{path}: no such file or folder", file=sys.stderr)
    if missing:
        return EXIT_FAILED
    changed, failed = [], False
    for path in rule_files(paths):
        shown = display_path(path)
        text = path.read_text(encoding="utf-8")
        try:
            formatted = format_source(text, shown)
        except FormatError as exc:
            print("\n\n".join(render(d, text) for d in exc.diagnostics), file=sys.stderr)
            failed = True
            continue
        if formatted != text:
            changed.append(shown)
            if not args.check:
                path.write_text(formatted, encoding="utf-8")
    for shown in changed:
        print(shown if args.check else f"formatted {shown}")
    if failed:
        return EXIT_FAILED
    return EXIT_FAILED if args.check and changed else EXIT_OK


# ---- test ---------------------------------------------------------------------------------------------------


def _compile(args: argparse.Namespace) -> EventGraph | None:
    from engine.reload.rules import compile_paths

    config = load_config(args.config)
    if args.rules is not None:
        config = config.model_copy(update={"rules_dir": args.rules.resolve(),
                                           "scripts_dir": args.rules.resolve() / "scripts"})
    result = compile_paths([config.rules_dir], config)
    if result.diagnostics:
        print(result.render_all(), file=sys.stderr)
    return result.graph


def run_test(args: argparse.Namespace) -> int:
    try:
        kind, fields, words = parse_event(args.event)
    except ValueError as exc:
        print(f"herald test: {exc}\n\n{EVENT_HELP}", file=sys.stderr)
        return EXIT_USAGE
    graph = _compile(args)
    if graph is None:
        print("herald test: the rules above do not compile", file=sys.stderr)
        return EXIT_FAILED
    print(f"event: {kind} " + " ".join(f"{k}={_show(v)}" for k, v in sorted(fields.items())))
    matched = graph.match(kind, fields)
    for rule in matched:
        line = f"  match    {rule.name} ({rule.location})"
        if rule.kind == "command":
            bound = rule.bind_args(words)
            line += f": arguments refused: {bound}" if isinstance(bound, str) else (
                f": arguments {bound}" if bound else "")
        print(line + _plan(rule))
    for rule in graph.of_kind(kind):
        if rule not in matched:
            print(f"  no match {rule.name} ({rule.location}): {rule.explain(fields) or '?'} does not hold")
    if not graph.of_kind(kind):
        print(f"  no rule is on {kind}")
    return EXIT_OK


def _plan(rule: CompiledRule) -> str:
    steps = [_step(s) for s in (*rule.stages, *rule.actions)]
    return f" -> would {', '.join(steps)}"


def _step(step: object) -> str:
    """A stage or action in a few words: its kind and the settings a rule gave it (no defaults, no fingerprints)."""
    from dataclasses import fields

    name = type(step).__name__.removesuffix("Stage").removesuffix("Action")
    settings = {f.name: getattr(step, f.name) for f in fields(step)  # type: ignore[arg-type]
                if f.name != "fingerprint" and getattr(step, f.name) not in (None, (), "", f.default)}
    inner = " ".join(f"{k}={_show(v)}" for k, v in settings.items())
    return f"{name.lower()}({inner})" if inner else name.lower()


def parse_event(words: Sequence[str]) -> tuple[str, dict[str, object], tuple[str, ...]]:
    """(kind, fields, command words) from a JSON file or inline words; ValueError says what is wrong."""
    if len(words) == 1 and (words[0].endswith(".json") or Path(words[0]).is_file()):
        data = json.loads(Path(words[0]).read_text(encoding="utf-8"))
        kind = str(data["kind"])
        if "fields" in data:
            return kind, dict(data["fields"]), tuple(data.get("args", ()))
        flat = {f"{kind}.{k}": v for k, v in data.get("data", {}).items()}
        return kind, flat, tuple(data.get("data", {}).get("args", ()))
    if len(words) == 1:
        words = shlex.split(words[0])
    kind, rest = words[0], list(words[1:])
    if kind == "command":
        if not rest:
            raise ValueError("a command needs its text, such as \"/backup now\"")
        text = rest.pop(0)
        parts = text.lstrip("/").split()
        if not parts:
            raise ValueError("the command text is empty")
        fields: dict[str, object] = {"command.name": parts[0], "command.args": tuple(parts[1:]), "command.text": text}
        if rest[:1] == ["as"] and len(rest) >= 2:
            fields["command.user"] = fields["actor.principal"] = rest[1]
            rest = rest[2:]
        if rest:
            raise ValueError(f"unexpected {' '.join(rest)!r} after the command")
        return kind, fields, tuple(parts[1:])
    fields = {}
    labels: dict[str, str] = {}
    if kind == "button" and rest and "=" not in rest[0]:
        fields["button.action"] = rest.pop(0)
    if kind == "event" and rest and "=" not in rest[0]:
        fields["event.name"] = rest.pop(0)
    for word in rest:
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"expected FIELD=VALUE, found {word!r}")
        if kind == "alert" and key not in _ALERT_FIELDS and "." not in key:
            labels[key] = value
            continue
        fields[key if "." in key else f"{kind}.{key}"] = _typed(value)
    if kind == "alert":
        fields.setdefault("alert.status", "firing")
        fields["alert.labels"] = labels
    return kind, fields, ()


def _typed(value: str) -> object:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def _show(value: object) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


# ---- graph --------------------------------------------------------------------------------------------------


def run_graph(args: argparse.Namespace) -> int:
    graph = _compile(args)
    if graph is None:
        return EXIT_FAILED
    try:
        print(graph_dot(graph) if args.dot else graph_text(graph))
    except BrokenPipeError:  # `herald graph | head`
        sys.stderr.close()
    return EXIT_OK


def graph_text(graph: EventGraph) -> str:
    out = []
    for kind in dict.fromkeys(rule.kind for rule in graph.rules):
        out.append(f"on {kind}:")
        for rule in graph.of_kind(kind):
            when = [c.text or f"{c.field} = {c.value}" for c in rule.conditions] + [c.text for c in rule.checks]
            out.append(f"  {rule.name} ({rule.location})")
            out.append(f"    when   {' and '.join(when) or 'always'}")
            for stage in rule.stages:
                out.append(f"    stage  {_step(stage)}")
            for action in rule.actions:
                out.append(f"    do     {_step(action)}")
    return "\n".join(out) if out else "(no rules)"


def graph_dot(graph: EventGraph) -> str:
    out = ["digraph herald {", "  rankdir=LR;"]
    listeners: dict[str, list[str]] = {}
    for rule in graph.rules:
        for cond in rule.conditions:
            if cond.field == "event.name":
                listeners.setdefault(str(cond.value), []).append(rule.name)
    for kind in dict.fromkeys(rule.kind for rule in graph.rules):
        out.append(f'  "kind:{kind}" [shape=box, label="on {kind}"];')
    for rule in graph.rules:
        out.append(f'  "{rule.name}" [label="{rule.name}\\n{rule.location}"];')
        out.append(f'  "kind:{rule.kind}" -> "{rule.name}";')
        for action in rule.actions:
            event = getattr(action, "event", None)
            if event is not None:
                for target in listeners.get(event, ()):
                    out.append(f'  "{rule.name}" -> "{target}" [label="emit {event}"];')
    out.append("}")
    return "\n".join(out)
