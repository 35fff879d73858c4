"""The `herald` command line. Only this module decides exit codes."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import importlib
import logging
import re
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_client_args, add_config_args, client_host, load_for
from engine.core import datafolder
from engine.core.config import DEFAULT_CONFIG_NAME, Config, load_config
from engine.core.errors import ConfigError, HeraldError, RulesError

if TYPE_CHECKING:
    from dsl import CompileResult
    from engine.reload.reloader import Fallback

# Command groups that live in modules of their own: each has `add_parsers(sub)`, and every parser it adds sets
# `handler=` (a function taking the parsed args and returning the exit code) through `set_defaults`.
COMMAND_MODULES: tuple[str, ...] = (
    "engine.cli.security",
    "engine.cli.worker",
    "engine.cli.sandbox",
    "engine.cli.rules",
    "engine.cli.alerts",
    "engine.cli.audit",
)
COMMANDS_GROUP = "herald.commands"  # entry points: functions taking the sub-parsers, adding their commands
# `herald run` parses with this module's own commands only: the long-running engine then never loads the other
# command groups (the TUI's, the remote client's, ...: about 0.7 MiB it would keep resident for nothing).
# Every other command line, `herald --help` included, sees every group.
SELF_CONTAINED_COMMANDS = frozenset({"run"})
GC_GEN0_THRESHOLD = 50_000  # allocations between young-generation collections (CPython's default: 700)


def build_parser(*, groups: bool = True) -> argparse.ArgumentParser:
    """The `herald` parser; `groups=False` leaves out the command groups of COMMAND_MODULES and entry points."""
    parser = argparse.ArgumentParser(
        prog="herald",
        description="Herald turns rule files into a running automation: alerts and chat commands in, "
                    "notifications, replies and sandboxed scripts out, everything audited.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run the engine (webhooks, chat, rules, tasks)",
                         description="Run Herald: serve webhooks at /hooks/..., chat at /chat and the API; "
                                     "compile the rules and act on them. Stops on Ctrl-C or SIGTERM.")
    add_config_args(run)
    run.add_argument("--rules", type=Path, metavar="DIR", help="rules folder (default: rules)")
    run.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on (default: 8470; 0 picks a free one)")
    run.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve HTTPS/WSS with this certificate (PEM)")
    run.add_argument("--tls-key", type=Path, metavar="FILE", help="the certificate's private key (PEM)")
    run.add_argument("--no-watch", action="store_true",
                     help="do not watch the rules folder and config; reload only on SIGHUP or `herald reload`")
    run.add_argument("--strict", action="store_true",
                     help="refuse to start when a rule file does not compile (default: start with the last rules "
                          "that compiled, kept in the data folder, and report the broken files loudly)")
    run.add_argument("-v", "--verbose", action="store_true", help="log debug details")

    reload = sub.add_parser("reload", help="reload rules and config in a running engine now",
                            description="Ask the running engine to re-read the rules folder and the config (the "
                                        "same as saving a file, or SIGHUP). Prints the diff (+added -removed "
                                        "~changed =same), or every problem as path:line:col: message and exits 1; "
                                        "the running rules stay then.")
    add_client_args(reload)

    check = sub.add_parser("check", help="compile rule files and print every problem",
                           description="Check every *.rules file under PATH (default: the rules folder). "
                                       "Exit 0 when all compile, 1 otherwise.")
    check.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    check.add_argument("--config", type=Path, metavar="FILE", help="config file naming teams and roles")

    init = sub.add_parser("init", help="write a starter herald.toml with an admin and a chat token")
    init.add_argument("--config", type=Path, default=Path("herald.toml"), metavar="FILE",
                      help="where to write the starter config (default: herald.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")

    send = sub.add_parser("send", help="send a test alert or command to a running engine",
                          description="Examples:  herald send alert severity=critical service=database\n"
                                      "           herald send command '/backup now' --as alice",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    add_client_args(send)
    send_sub = send.add_subparsers(dest="send_kind", metavar="KIND", required=True)
    alert = send_sub.add_parser("alert", help="post an Alertmanager-style alert to /hooks/alertmanager")
    alert.add_argument("labels", nargs="*", metavar="LABEL=VALUE",
                       help="labels, e.g. severity=critical service=database (alertname defaults to TestAlert)")
    alert.add_argument("--summary", default="Test alert sent by herald send")
    alert.add_argument("--resolved", action="store_true", help="send it as resolved")
    command = send_sub.add_parser("command", help="run a chat command through the API and print its progress")
    command.add_argument("text", help="the command, e.g. '/backup now'")
    command.add_argument("--as", dest="principal", metavar="PRINCIPAL",
                         help="act as this principal (default: api_principal from the config)")
    command.add_argument("--timeout", type=float, default=600, help="seconds to wait for the result")
    for kind in (alert, command):  # `herald send alert ... --url U` reads as naturally as `herald send --url U alert`
        add_client_args(kind, suppress=True)
    if not groups:
        return parser
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parsers(sub)
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):  # `herald tui`, plugins' own
        try:
            entry.load()(sub)
        except Exception as exc:  # one broken command group must not take the CLI down
            logging.getLogger("herald.cli").warning("command group %s is unavailable: %s", entry.name, exc)
    return parser


def tune_gc_for_serving() -> None:
    """Once started, the engine holds a large, long-lived object graph (modules, the compiled rules, pydantic
    schemas) and then allocates many short-lived objects per request. Freezing what exists keeps the collector from
    walking it again and again, and a larger first generation collects less often: at 100 alerts per POST about
    +15% throughput, with no change in what is kept (measured in benchmarks/webhook_ingest.py)."""
    re.purge()  # the start-up compile's patterns (the released parser's lexers) would stay in re's cache of 512
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(groups=not words or words[0] not in SELF_CONTAINED_COMMANDS).parse_args(words)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if hasattr(args, "handler"):
            return int(args.handler(args))
        if args.command == "run":
            return _run(args)
        if args.command == "check":
            return _check(args)
        if args.command == "init":
            from engine.cli.scaffold import write_starter_config
            print(write_starter_config(args.config, force=args.force))
            return EXIT_OK
        if args.command == "send":
            from engine.cli.client import send
            return send(load_for(args), args)
        if args.command == "reload":
            return _reload(args)
    except RulesError as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HeraldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


def _check(args: argparse.Namespace) -> int:
    from engine.plugin.discovery import discover, validate_integrations
    from engine.reload.rules import compile_paths

    config = load_config(args.config)
    validate_integrations(config, discover())  # ConfigError naming every bad section and address
    paths = args.paths or [config.rules_dir]
    missing = [p for p in paths if not p.exists()]
    if missing:
        for path in missing:
            print(f"{path}: no such file or folder", file=sys.stderr)
        return EXIT_FAILED
    if args.paths and len(args.paths) == 1 and args.paths[0].is_dir():
        config = config.model_copy(update={"scripts_dir": args.paths[0].resolve() / "scripts"})
    result = compile_paths(paths, config)
    if result.diagnostics:
        print(result.render_all(), file=sys.stderr)
    if result.graph is None:
        errors = sum(1 for d in result.diagnostics if d.severity == "error")
        print(f"{errors} error{'s' if errors != 1 else ''} in {len(result.sources)} file(s)", file=sys.stderr)
        return EXIT_FAILED
    if not result.sources:
        print(f"warning: no *.rules files in {', '.join(map(str, paths))}: Herald would do nothing", file=sys.stderr)
    print(f"ok: {len(result.graph.rules)} rules in {len(result.sources)} file(s)")
    return EXIT_OK


def _run_config(args: argparse.Namespace) -> Config:
    """The config as `herald run` uses it: the file, then the command line's overrides (also on every reload)."""
    config = load_for(args, rules=args.rules)
    overrides = (("host", args.host), ("port", args.port), ("tls_cert", args.tls_cert and args.tls_cert.resolve()),
                 ("tls_key", args.tls_key and args.tls_key.resolve()))
    http = config.http.model_copy(update={k: v for k, v in overrides if v is not None})
    return config.model_copy(update={"http": http})


def _config_path(args: argparse.Namespace) -> Path | None:
    """The config file `load_config` reads: --config, else ./herald.toml when it exists."""
    if args.config is not None:
        return Path(args.config).resolve()
    default = Path.cwd() / DEFAULT_CONFIG_NAME
    return default if default.exists() else None


def _run(args: argparse.Namespace) -> int:
    from dsl.parser import release_parser
    from engine.plugin.discovery import discover, validate_integrations
    from engine.reload.reloader import ConfigSource
    from engine.reload.rules import compile_paths
    from engine.server.app import Engine

    config = _run_config(args)
    http = config.http
    if (http.tls_cert is None) != (http.tls_key is None):
        print("herald: --tls-cert and --tls-key go together", file=sys.stderr)
        return EXIT_USAGE
    config_path = _config_path(args)
    source = ConfigSource(config_path, lambda: _run_config(args)) if config_path is not None else None
    validate_integrations(config, discover())  # before anything starts: `integrations.x.token: field required`
    result = compile_paths([config.rules_dir], config)
    fallback = None
    if result.graph is None:
        print(result.render_all(), file=sys.stderr)
        result, fallback = _last_good_rules(config, result, strict=args.strict)
        if fallback is None:
            return EXIT_FAILED
    graph = result.graph
    assert graph is not None
    # The rules are compiled: the engine parses again only when a reload finds a changed file, so the parser's
    # memory goes back to the allocator for the sessions to use (the first such reload builds it again, ~0.15 s).
    release_parser()
    if not result.sources:
        print(f"herald: warning: no *.rules files in {config.rules_dir}: Herald will do nothing until you add "
              "some (they load as they are saved)", file=sys.stderr)

    try:  # before anything opens the database: one engine per data folder
        folder = datafolder.claim(config.data_dir)
    except datafolder.FolderInUse as exc:
        print(f"herald: not starting: {exc}", file=sys.stderr)
        return EXIT_FAILED

    async def serve() -> None:
        engine = Engine(config, graph, teams=result.teams, config_source=source, watch=not args.no_watch,
                        fallback=fallback)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, engine.request_reload, "SIGHUP")  # the same path as herald reload
        try:
            await engine.start()
            tune_gc_for_serving()
            scheme = "https" if http.tls_cert else "http"
            folder.publish(f"{scheme}://{client_host(http.host)}:{engine.port}")
            print(f"Herald is ready: {scheme}://{http.host}:{engine.port}  (chat: {scheme.replace('http', 'ws')}://"
                  f"{http.host}:{engine.port}/chat, rules: {len(graph.rules)}, data: {config.data_dir})",
                  flush=True)
            await stop.wait()
        finally:
            await engine.stop()

    try:
        asyncio.run(serve())
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"herald: not starting: {http.host}:{http.port} is already in use by another program; "
              "choose another port with --port (or [http] port in the config)", file=sys.stderr)
        return EXIT_FAILED
    finally:
        folder.release()
    return EXIT_OK


def _last_good_rules(config: Config, broken: CompileResult, *, strict: bool) -> tuple[CompileResult, Fallback | None]:
    """A broken rule file must not mean no paging at all: the last rules that compiled (saved in the data folder at
    every start and accepted reload), if there are any and they still compile; None with the reason printed else."""
    from dsl import compile_sources
    from engine.reload import last_good
    from engine.reload.reloader import Fallback, diagnostic_views
    from engine.reload.rules import catalog_for

    if strict:
        print("herald: not starting: the rules above do not compile (--strict)", file=sys.stderr)
        return broken, None
    saved = last_good.load(config.data_dir)
    if saved is None:
        print("herald: not starting: the rules above do not compile, and no earlier rules that compiled are kept in "
              f"{config.data_dir} to fall back on", file=sys.stderr)
        return broken, None
    result = compile_sources(saved.sources, catalog_for(config))
    if result.graph is None:
        print(f"herald: not starting: the rules above do not compile, nor do the last good ones saved {saved.saved} "
              "(the config changed since?)", file=sys.stderr)
        return broken, None
    print(f"herald: WARNING: the rules above do not compile: starting with the last rules that compiled (saved "
          f"{saved.saved}, {len(result.graph.rules)} rules); fix the files and they load", file=sys.stderr)
    return result, Fallback(saved=saved.saved,
                            diagnostics=diagnostic_views(broken.diagnostics, list(broken.sources.items())))


def _reload(args: argparse.Namespace) -> int:
    """POST /api/v1/reload with the engine's local token; print the diff or every diagnostic."""
    import aiohttp

    from engine.cli.common import engine_url, read_token, unreachable

    config = load_for(args)
    address, token = engine_url(config, args.url), read_token(config)
    url = address.url

    async def call() -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.post(f"{url}/api/v1/reload", headers={"Authorization": f"Bearer {token}"}) as r:
                    return r.status, await r.json(content_type=None)
            except aiohttp.ClientError as exc:
                raise unreachable(address, exc) from None
            except ValueError:
                raise HeraldError(f"Herald at {url} answered {r.status} without JSON") from None

    status, body = asyncio.run(call())
    if status == 200:
        print(f"{body['message']} (version {body['version']})")
        for key in ("added", "removed", "changed"):
            names = body.get(key) or []
            if names:
                print(f"  {key}: {', '.join(map(str, names))}")
        for key in body.get("needs_restart") or []:
            print(f"  not applied, needs a restart: {key}", file=sys.stderr)
        return EXIT_OK
    if status == 422:
        from engine.client.snapshots import DiagnosticView

        for item in body.get("diagnostics") or []:
            print(DiagnosticView.model_validate(item), file=sys.stderr)
        print(body["message"], file=sys.stderr)
        return EXIT_FAILED
    raise HeraldError(f"Herald refused the reload ({status}): {body.get('error', body)}")


if __name__ == "__main__":
    sys.exit(main())
