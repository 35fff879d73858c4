"""Hot reload: rules (and the config) are swapped as a transaction — all of the new state or none of it.

Every trigger takes the same path, `Reloader.reload()`: the file watcher (after a quiet spell), `herald reload`
(through `POST /api/v1/reload`), SIGHUP, and `Engine.reload()` in tests.

    read the tree (rule texts, script names, config text; in a thread) ── digest equal to the running one? done.
      └─ load the config as a whole ── compile against the new catalog (in a thread)
           ├─ any error: keep everything running; report each diagnostic as path:line:col: message
           └─ all good: swap graph + config + people in one step (no await between deciding and swapping),
                        report the diff `+added -removed ~changed =same`

One reload at a time (a lock); the swap itself is synchronous, so the dispatcher matches each event against exactly
one version. Runs already under way finish with the graph they started with (Runtime.handle captures it).

Config keys that only take effect at start (http, data_dir, rules_dir, scripts_dir, sandbox, workers,
api_principal, integrations — integrations read their section when they are set up, and a running web server
cannot take new routes) are reported as "needs a restart" and not applied; people, roles, teams and alerts are.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ValidationError

from dsl import CompileCache, CompiledRule, CompileResult, EventGraph, compile_sources
from dsl.ast import TeamDecl
from dsl.diagnostics import render
from engine.client.snapshots import DiagnosticView, ReloadView, RuleEntry, RulesView
from engine.core.bus import Bus
from engine.core.config import Config
from engine.core.errors import ConfigError
from engine.plugin.api import ConnectorSpec, Integration
from engine.plugin.discovery import validate_integrations
from engine.reload import last_good
from engine.reload.rules import catalog_for
from engine.reload.tree import NAMES_IN_AUDIT, RulesDiff, TreeSnapshot, WatchedPaths, diff_graphs, read_tree
from engine.runs.run import Services
from engine.runs.runtime import Runtime
from engine.runs.stateful import Stateful
from engine.security.identity import Directory

if TYPE_CHECKING:
    from watchfiles import Change

log = logging.getLogger("herald.reload")

# Applied on reload; every other key needs a restart. `alerts` (the severity scale the rules compile against, its
# aliases, the unmatched team) is swapped in the same step as the rules compiled against it.
HOT_CONFIG_KEYS = ("roles", "principals", "teams", "alerts")
QUIET_S = 0.15  # after the watcher's last change, wait this long for more before reloading (editors save in steps)
WATCH_STEP_MS = 50
WATCH_STOP_CHECK_MS = 500
WATCH_RETRY_S = 1.0
DIAGNOSTICS_IN_AUDIT = 100
# Modules of the stateful clauses that may expose `async def on_graph_swapped(old, new)`: the first one that
# exists and has it is called after every swap, so timers and state of deleted or changed rules are re-planned.

Status = Literal["loaded", "reloaded", "unchanged", "rejected"]


@dataclass(frozen=True)
class ConfigSource:
    """Where the config comes from and how to load it the way the engine was started (same overrides)."""

    path: Path
    load: Callable[[], Config]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def diagnostic_views(diags: Sequence[Any], sources: Sequence[tuple[str, str]] = ()) -> list[DiagnosticView]:
    """Diagnostics for observers, each with its source line and caret (as `herald check` prints them)."""
    texts = dict(sources)
    return [DiagnosticView(path=d.span.path, line=d.span.line, col=d.span.col, message=d.message,
                           severity=d.severity, source=_source_lines(d, texts.get(d.span.path, "")))
            for d in diags]


def _source_lines(diag: Any, text: str) -> str:
    """The lines `render` puts under the `path:line:col: message` line: the source line and the carets."""
    rendered = render(dataclasses.replace(diag, hint=None), text).splitlines()[1:]
    return "\n".join(rendered)


def trigger_of(rule: CompiledRule) -> str:
    """A compiled rule's trigger in the words of a rule file: `on alert severity critical service database`."""
    head = f"on command {rule.command}" if rule.command else f"on {rule.kind}"
    tests = [c.as_check().text for c in rule.conditions if not (rule.command and c.field == "command.name")]
    return " ".join([head, *tests, *(c.text for c in rule.checks)])


_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


def config_problem(path: Path, exc: ConfigError) -> DiagnosticView:
    """A config error as a diagnostic; TOML syntax errors carry a line and column, model errors name the key."""
    message = str(exc).removeprefix(f"{path}: ")
    found = _TOML_POSITION.search(message)
    if found:
        return DiagnosticView(path=str(path), line=int(found[1]), col=int(found[2]),
                              message=_TOML_POSITION.sub("", message).rstrip())
    return DiagnosticView(path=str(path), line=0, col=0, message=message)


def restart_keys(running: Config, new: Config) -> list[str]:
    """The config keys outside HOT_CONFIG_KEYS whose value differs (one level deep: `http.port`)."""
    keys: list[str] = []
    for name in type(running).model_fields:
        if name in HOT_CONFIG_KEYS:
            continue
        old_value, new_value = getattr(running, name), getattr(new, name)
        if old_value == new_value:
            continue
        if isinstance(old_value, BaseModel) and isinstance(new_value, BaseModel):
            keys.extend(f"{name}.{sub}" for sub in type(old_value).model_fields
                        if getattr(old_value, sub) != getattr(new_value, sub))
        elif isinstance(old_value, dict) and isinstance(new_value, dict):
            keys.extend(f"{name}.{key}" for key in sorted(set(old_value) | set(new_value))
                        if old_value.get(key) != new_value.get(key))
        else:
            keys.append(name)
    return keys


def hot_config(running: Config, new: Config) -> Config:
    """The running config with the new people, roles and teams, validated as a whole (the running one itself when
    those are the same, so a rules-only reload leaves the config and the directory alone)."""
    if all(getattr(running, key) == getattr(new, key) for key in HOT_CONFIG_KEYS):
        return running
    merged = running.model_dump()
    merged.update({key: getattr(new, key) for key in HOT_CONFIG_KEYS})
    return Config.model_validate(merged)


def adopt_config(services: Services, directory: Directory, config: Config) -> None:
    """Make the engine's one Services and one Directory answer from the new config, in one step (no await).

    Both objects are shared (integrations hold the Directory, the stateful clauses find their engine through the
    Services), so they are updated in place rather than replaced."""
    services.config = config
    directory.reconfigure(config)


class ReloadHost(Protocol):
    """What a reload needs of the engine: what runs now, how to put a new version in place, and where to report."""

    @property
    def config(self) -> Config: ...
    @property
    def runtime(self) -> Runtime: ...
    @property
    def stateful(self) -> Stateful: ...
    @property
    def bus(self) -> Bus: ...
    @property
    def installed(self) -> Sequence[Integration]: ...
    @property
    def connectors(self) -> Mapping[str, ConnectorSpec]: ...

    def swap(self, graph: EventGraph, teams: Sequence[TeamDecl], config: Config) -> int: ...

    async def audit_publish(self, action: str, actor: str, **data: Any) -> None: ...

    async def tell_admins(self, text: str) -> None:
        """A notice to every admin, wherever they can be reached."""
        ...


@dataclass(frozen=True)
class Fallback:
    """The engine started on the last rules that compiled, because the files on disk do not."""

    saved: str
    diagnostics: Sequence[DiagnosticView]


class Reloader:
    """Owns the reload transaction, the last outcome (as a RulesView) and the file watcher."""

    def __init__(self, engine: ReloadHost, *, config_source: ConfigSource | None = None, quiet_s: float = QUIET_S):
        self._engine = engine
        self._config_source = config_source
        self._quiet_s = quiet_s
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._requests: list[str] = []
        self._stop = asyncio.Event()
        self._running_digest: str | None = None
        self._compile_cache = CompileCache()  # reloads run one at a time (under _lock), as the cache needs
        self._last_attempt: tuple[str, ReloadView] | None = None  # digest and outcome of the last rejected tree
        self.view: RulesView | None = None
        self.reloads = 0  # swaps done (for tests and benchmarks)
        self.attempts = 0  # reloads that read the tree and found it changed (swapped or rejected)

    @property
    def paths(self) -> WatchedPaths:
        config = self._engine.config
        return WatchedPaths(rules_dir=config.rules_dir, scripts_dir=config.scripts_dir,
                            config_file=self._config_source.path if self._config_source else None)

    # -- start, triggers ---------------------------------------------------------------------------------------

    @property
    def stale(self) -> bool:
        """True while the rule files on disk are not what runs (a rejected reload, or a start on the last good
        rules): /metrics says so, so it cannot go unnoticed."""
        return self._last_attempt is not None

    async def start(self, fallback: Fallback | None = None) -> None:
        """Remember what the running graph was compiled from, and publish the first RulesView. With `fallback`, the
        files on disk did not compile and the engine runs the last rules that did: that is reported at once, loudly,
        and the next reload that compiles replaces them."""
        tree = await asyncio.to_thread(read_tree, self.paths)
        engine = self._engine
        version = engine.runtime.graph_version
        if fallback is None:
            self._running_digest = tree.digest
            await asyncio.to_thread(last_good.save, engine.config.data_dir, tree.sources)
            self._publish(ReloadView(status="loaded", time=now_iso(), trigger="start", version=version,
                                     message=f"{len(engine.runtime.graph.rules)} rules loaded"))
            return
        errors = [d for d in fallback.diagnostics if d.severity == "error"]
        files = sorted({d.path for d in errors})
        message = (f"the rule files do not compile ({len(errors)} error{'s' if len(errors) != 1 else ''} in "
                   f"{', '.join(files)}): running the last rules that compiled, saved {fallback.saved}; "
                   "fix the files and they load")
        log.error("%s", message)
        outcome = ReloadView(status="rejected", time=now_iso(), trigger="start", version=version, message=message,
                             diagnostics=list(fallback.diagnostics))
        self._last_attempt = (tree.digest, outcome)
        await engine.audit_publish("rules.fallback", "system", saved=fallback.saved, files=files, errors=len(errors),
                                   diagnostics=[{"at": d.where, "message": d.message}
                                                for d in errors[:DIAGNOSTICS_IN_AUDIT]])
        self._publish(outcome)
        await engine.tell_admins(f"⚠ Herald started with the last rules that compiled (saved {fallback.saved}): "
                                 f"{', '.join(files)} do not compile. `herald check` shows where.")

    def request(self, trigger: str) -> None:
        """Ask the reload loop for a reload (signal handlers and other synchronous callers)."""
        self._requests.append(trigger)
        self._wake.set()

    def close(self) -> None:
        """Stop the watchers promptly (they poll the stop flag every WATCH_STEP_MS)."""
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """The reload loop: explicit requests at once, watcher changes after a quiet spell."""
        while not self._stop.is_set():
            await self._wake.wait()
            if self._stop.is_set():
                return
            if not self._requests:  # changes on disk: let the editor finish saving
                while True:
                    self._wake.clear()
                    await asyncio.sleep(self._quiet_s)
                    if not self._wake.is_set() or self._requests or self._stop.is_set():
                        break
            self._wake.clear()
            triggers, self._requests = self._requests, []
            try:
                await self.reload(trigger=triggers[0] if triggers else "watch")
            except Exception:
                log.exception("reload failed unexpectedly; the running rules stay")

    async def watch(self) -> None:
        """Watch the rule tree (and the config file's folder, not recursively) and wake the reload loop."""
        paths = self.paths
        roots = paths.roots()
        if not roots:
            log.warning("not watching for rule changes: %s is not a folder", paths.rules_dir)
            return
        watchers = [self._watch(roots, recursive=True, paths=paths)]
        if paths.config_file is not None and paths.config_file.parent.is_dir():
            watchers.append(self._watch([paths.config_file.parent], recursive=False, paths=paths))
        await asyncio.gather(*watchers)

    async def _watch(self, roots: list[Path], *, recursive: bool, paths: WatchedPaths) -> None:
        # Imported here, not at the top: an engine run with --no-watch never loads watchfiles (its Rust
        # extension, anyio, multiprocessing: about 1 MiB of an idle engine).
        from watchfiles import awatch

        def wanted(change: Change, path: str) -> bool:
            return paths.wants(path)

        logging.getLogger("watchfiles.main").setLevel(logging.WARNING)  # it logs every batch at INFO
        while not self._stop.is_set():
            try:
                async for _changes in awatch(*roots, watch_filter=wanted, step=WATCH_STEP_MS, recursive=recursive,
                                             stop_event=self._stop, rust_timeout=WATCH_STOP_CHECK_MS):
                    self._wake.set()
            except (OSError, RuntimeError) as exc:  # a watched folder removed or replaced: watch it again
                log.warning("watching %s failed (%s); retrying", ", ".join(map(str, roots)), exc)
                self._wake.set()
                await asyncio.sleep(WATCH_RETRY_S)

    # -- the transaction ---------------------------------------------------------------------------------------

    async def reload(self, *, trigger: str, actor: str = "system") -> ReloadView:
        """Read, validate, compile and (when everything is good) swap. Returns what happened."""
        async with self._lock:
            tree = await asyncio.to_thread(read_tree, self.paths)
            if tree.digest == self._running_digest:
                return self._unchanged(trigger)
            if self._last_attempt is not None and self._last_attempt[0] == tree.digest:
                return self._last_attempt[1]  # the same broken tree: already reported
            self.attempts += 1
            if tree.problems:
                return await self._reject(tree, diagnostic_views(tree.problems, tree.sources), trigger, actor)
            config, restart = self._engine.config, []
            if self._config_source is not None:
                try:
                    loaded = await asyncio.to_thread(self._config_source.load)
                    restart = restart_keys(self._engine.config, loaded)
                    config = hot_config(self._engine.config, loaded)
                    validate_integrations(config, self._engine.installed)
                except ConfigError as exc:
                    return await self._reject(tree, [config_problem(self._config_source.path, exc)], trigger, actor,
                                              what="config")
                except ValidationError as exc:
                    problem = ConfigError(f"{self._config_source.path}: {exc.errors()[0]['msg']}")
                    return await self._reject(tree, [config_problem(self._config_source.path, problem)], trigger,
                                              actor, what="config")
            result = await asyncio.to_thread(_compile, tree, config, self._compile_cache, self._engine.connectors)
            if result.graph is None:
                return await self._reject(tree, diagnostic_views(result.diagnostics, tree.sources), trigger,
                                          actor)
            # From here to the swap: no await, so no event sees a mix of versions.
            old = self._engine.runtime.graph
            diff = diff_graphs(old, result.graph)
            self._engine.swap(result.graph, result.teams, config)
            self._running_digest, self._last_attempt = tree.digest, None
            self.reloads += 1
            outcome = await self._accepted(old, result.graph, diff, restart, trigger, actor)
            await asyncio.to_thread(last_good.save, config.data_dir, tree.sources)  # what a broken restart runs
            return outcome

    def _unchanged(self, trigger: str) -> ReloadView:
        """Nothing to do; a rejection shown earlier is cleared (the tree is back to what runs), and said so."""
        engine = self._engine
        self._last_attempt = None
        version = engine.runtime.graph_version
        fixed = self.view is not None and self.view.last.status == "rejected"
        message = (f"the problems reported before are fixed: the files are back to what runs (version {version})"
                   if fixed else "rules unchanged")
        outcome = ReloadView(status="unchanged", time=now_iso(), trigger=trigger, version=version, message=message)
        if fixed:
            log.info("%s", message)
            self._publish(outcome)
        return outcome

    async def _reject(self, tree: TreeSnapshot, diagnostics: list[DiagnosticView], trigger: str,
                      actor: str, *, what: Literal["rules", "config"] = "rules") -> ReloadView:
        engine = self._engine
        errors = [d for d in diagnostics if d.severity == "error"] or diagnostics
        version = engine.runtime.graph_version
        message = (f"{what} rejected: {len(errors)} error{'s' if len(errors) != 1 else ''}; "
                   f"still running version {version}")
        for diag in diagnostics:
            (log.error if diag.severity == "error" else log.warning)("%s", diag)
        log.error("%s", message)
        outcome = ReloadView(status="rejected", time=now_iso(), trigger=trigger, version=version, message=message,
                             diagnostics=diagnostics)
        self._last_attempt = (tree.digest, outcome)
        await engine.audit_publish("rules.rejected", actor, trigger=trigger, version=version, errors=len(errors),
                                   diagnostics=[{"at": d.where, "message": d.message}
                                                for d in diagnostics[:DIAGNOSTICS_IN_AUDIT]])
        self._publish(outcome)
        return outcome

    async def _accepted(self, old: EventGraph, new: EventGraph, diff: RulesDiff, restart: list[str], trigger: str,
                        actor: str) -> ReloadView:
        engine = self._engine
        version = engine.runtime.graph_version
        message = f"rules reloaded: {diff.summary}"
        log.info("%s (version %d)", message, version)
        if restart:
            log.warning("config changes that need a restart were not applied: %s", ", ".join(restart))
        outcome = ReloadView(status="reloaded", time=now_iso(), trigger=trigger, version=version, message=message,
                             diff=diff.summary, added=list(diff.added[:NAMES_IN_AUDIT]),
                             removed=list(diff.removed[:NAMES_IN_AUDIT]), changed=list(diff.changed[:NAMES_IN_AUDIT]),
                             needs_restart=restart)
        # Observers see the new version and its outcome together, in the same step as the swap (no await before).
        self._publish(outcome)
        try:
            await self._engine.stateful.on_graph_swapped(old, new)
        except Exception:
            log.exception("re-planning stateful clauses after the swap to version %d failed", version)
        extra: dict[str, object] = {"needs_restart": restart} if restart else {}
        if diff.moved:
            extra["moved"] = [f"{a} -> {b}" for a, b in diff.moved[:NAMES_IN_AUDIT]]
        await engine.audit_publish("rules.reloaded", actor, trigger=trigger, version=version, diff=diff.summary,
                                   added=outcome.added, removed=outcome.removed, changed=outcome.changed, **extra)
        return outcome

    def _publish(self, last: ReloadView) -> None:
        graph = self._engine.runtime.graph
        rules = self.view.rules if self.view is not None and self.view.version == last.version else [
            RuleEntry(name=rule.name, location=rule.location, trigger=trigger_of(rule)) for rule in graph.rules]
        self.view = RulesView(version=self._engine.runtime.graph_version, rules=rules, last=last)
        self._engine.bus.publish(self.view)


def _compile(tree: TreeSnapshot, config: Config, cache: CompileCache,
             connectors: Mapping[str, ConnectorSpec]) -> CompileResult:
    """Compile the snapshot's sources against the catalog `config` and the connectors offer (in a worker thread)."""
    return compile_sources(list(tree.sources), catalog_for(config, connectors), cache=cache)

