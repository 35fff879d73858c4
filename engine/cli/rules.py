"""`herald fmt`, `herald test` and `herald graph`: the rule-file tools (formatting, dry runs, the compiled graph).

`test` feeds an event to the compiled graph and explains it; it runs nothing (no engine, no database, no chat).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsl import EventGraph, FormatError, format_source, render
from dsl.describe import describe
from engine.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from engine.core.config import Config, load_config

EVENT_HELP = """\
An event is inline words or a JSON file:
  alert severity=critical service=database [status=resolved] [summary=TEXT] [LABEL=VALUE ...]
                                  (every KEY=VALUE is a label, as `herald send alert` posts them)
  command "/backup now" [as alice]   (default: as the config's api_principal, like `herald send command`)
  button mute [arg=1h] [as alice]
  task script=backup.sh status=failed [exit_code=1]
  event deploy-done [KEY=VALUE ...]
  message text="disk full?"
  schedule rule=nightly
  heartbeat rule=watchdog name=Watchdog [state=missing|back]
  FILE.json: {"kind": "alert", "data": {"labels": {"severity": "critical"}}, "as": "alice"}
             (data holds the event's own fields, as in docs/rules.md; what it leaves out gets the defaults above)
  SOURCE BODY.json: a body an alert source posts, read as its hook would (SOURCE: alertmanager, grafana,
             generic/NAME); every alert in it
"""
CONFIG_HELP = "config file naming teams, roles and the rules folder (default: ./herald.toml if it exists)"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fmt = sub.add_parser("fmt", help="rewrite rule files in canonical form",
                         description="Format every *.rules file under PATH (default: the rules folder).")
    fmt.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    fmt.add_argument("--check", action="store_true", help="change nothing; list the files that would change, exit 1")
    fmt.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    fmt.set_defaults(handler=run_fmt)

    test = sub.add_parser("test", help="dry run: which rules an event triggers, and why the others do not",
                          description="Feed an event to the compiled rules and say what the engine would do: run, "
                                      "deny (roles), reject (arguments), or no match and the clause that fails. "
                                      "Runs nothing.\n\n" + EVENT_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    test.add_argument("event", nargs="+", metavar="EVENT")
    test.add_argument("--rules", type=Path, metavar="DIR", help="rules folder (default: from the config)")
    test.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    test.set_defaults(handler=run_test)

    graph = sub.add_parser("graph", help="print the compiled rule graph")
    graph.add_argument("--rules", type=Path, metavar="DIR", help="rules folder (default: from the config)")
    graph.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)
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


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if args.rules is not None:
        config = config.model_copy(update={"rules_dir": args.rules.resolve(),
                                           "scripts_dir": args.rules.resolve() / "scripts"})
    return config


def _compile(config: Config) -> EventGraph | None:
    from engine.reload.rules import compile_paths

    result = compile_paths([config.rules_dir], config)
    if result.diagnostics:
        print(result.render_all(), file=sys.stderr)
    return result.graph


def run_test(args: argparse.Namespace) -> int:
    from engine.cli.dryrun import EventError, events_from_args, explain

    config = _config(args)
    try:
        events = events_from_args(args.event, config)
    except EventError as exc:
        print(f"herald test: {exc}\n\n{EVENT_HELP}", file=sys.stderr)
        return EXIT_USAGE
    graph = _compile(config)
    if graph is None:
        print("herald test: the rules above do not compile", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(line for event in events for line in explain(event, graph, config)))
    return EXIT_OK


# ---- graph --------------------------------------------------------------------------------------------------


def run_graph(args: argparse.Namespace) -> int:
    graph = _compile(_config(args))
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
            when = [c.text or f"{c.field} = {c.value}" for c in rule.conditions] + \
                [c.text.removeprefix("when ") for c in rule.checks]  # a `when` clause's text starts with its keyword
            out.append(f"  {rule.name}" if rule.name == rule.location else f"  {rule.name} ({rule.location})")
            out.append(f"    when   {' and '.join(when) or 'always'}")
            for stage in rule.stages:
                out.append(f"    stage  {describe(stage)}")
            for action in rule.actions:
                out.append(f"    do     {describe(action)}")
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
