"""What a reload reads and compares: the rule tree on disk as one snapshot with a digest, which file changes deserve
a look, and the difference between two compiled graphs.

Blocking on purpose (it reads files): the reloader calls `read_tree` through `asyncio.to_thread`.

The snapshot covers everything a compile depends on: the text of every `*.rules` file, the *names* in the scripts
folder (the whitelist the catalog offers; a script's content is read when it runs, so editing one does not
recompile), and the config file's text. Equal digests mean an equal compile, so a save that changes nothing, or a
burst of watcher events for one save, does nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from dsl import Diagnostic, EventGraph
from dsl.ast import Span
from engine.reload.rules import RULE_SUFFIX, display_path, rule_files

# Names editors write next to the file they save: vim's swap files, its `4913` write probe and `file~` backups,
# emacs' `.#file` locks and `#file#` autosaves, JetBrains' and Kate's temp files. Hidden files count as temp too.
TEMP_SUFFIXES = (".swp", ".swx", ".swo", ".swn", ".tmp", ".bak", ".orig", ".kate-swp", "___jb_tmp___",
                 "___jb_old___")
STABLE_READ_ATTEMPTS = 5
NAMES_IN_AUDIT = 50  # rule names listed per diff category in the audit and the views; the counts stay exact


def is_editor_temp(name: str) -> bool:
    """True for names editors use while saving (and hidden files), which never trigger a reload."""
    return (name.startswith((".", "#")) or name.endswith("~") or name.endswith(TEMP_SUFFIXES)
            or name.isdigit())  # vim's probe: 4913, then 5036, 5159...


@dataclass(frozen=True)
class WatchedPaths:
    """The places a reload reads: the rules folder (recursive), the scripts folder and the config file."""

    rules_dir: Path
    scripts_dir: Path | None
    config_file: Path | None = None

    def wants(self, path: str) -> bool:
        """Whether a change to `path` may change the compile (a cheap filter; the digest decides for real).

        Rule files (`*.rules`), anything in the scripts folder and the config file do; editor temp files never
        do. A name without a suffix may be a folder that was renamed or removed (its files' events are not
        reported then), so it is looked at too: a look at an unchanged tree costs a read, not a compile.
        """
        candidate = Path(path)
        name = candidate.name
        if self.config_file is not None and candidate == self.config_file:
            return True
        if is_editor_temp(name):
            return False
        if self.scripts_dir is not None and candidate.is_relative_to(self.scripts_dir):
            return True
        return name.endswith(RULE_SUFFIX) or "." not in name

    def roots(self) -> list[Path]:
        """Folders to watch recursively: the rules folder, and the scripts folder when it lies elsewhere."""
        roots = [self.rules_dir]
        if self.scripts_dir is not None and not self.scripts_dir.is_relative_to(self.rules_dir):
            roots.append(self.scripts_dir)
        return [root for root in roots if root.is_dir()]


@dataclass(frozen=True)
class TreeSnapshot:
    """The rule sources in compile order, the scripts' names, the config text, and a digest over all of them.
    `problems` are files that could not be read (a reload with problems is rejected)."""

    sources: tuple[tuple[str, str], ...]
    scripts: tuple[str, ...]
    config_text: str | None
    digest: str
    problems: tuple[Diagnostic, ...] = field(default=())


def _signature(paths: WatchedPaths) -> tuple[object, ...]:
    """What changes when any watched file is written: names, sizes and modification times."""
    entries: list[object] = []
    files = rule_files([paths.rules_dir]) if paths.rules_dir.is_dir() else []
    if paths.config_file is not None:
        files.append(paths.config_file)
    for path in files:
        try:
            stat = path.stat()
            entries.append((str(path), stat.st_mtime_ns, stat.st_size))
        except OSError:
            entries.append((str(path), None))
    entries.append(tuple(script_names(paths.scripts_dir)))
    return tuple(entries)


def script_names(scripts_dir: Path | None) -> list[str]:
    """The scripts the catalog offers (the same rule as engine.rules.catalog_for: visible files)."""
    if scripts_dir is None or not scripts_dir.is_dir():
        return []
    return sorted(p.name for p in scripts_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def _problem(path: str, message: str) -> Diagnostic:
    return Diagnostic(Span(path, 1, 1, 1, 1), message)


def _read_once(paths: WatchedPaths) -> TreeSnapshot:
    sources: list[tuple[str, str]] = []
    problems: list[Diagnostic] = []
    if not paths.rules_dir.is_dir():
        problems.append(_problem(str(paths.rules_dir), "the rules folder does not exist"))
    else:
        for path in rule_files([paths.rules_dir]):
            shown = display_path(path)
            try:
                sources.append((shown, path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(_problem(shown, f"cannot read rule file: {exc}"))
    config_text = None
    if paths.config_file is not None:
        try:
            config_text = paths.config_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(_problem(str(paths.config_file), f"cannot read the config file: {exc}"))
    scripts = tuple(script_names(paths.scripts_dir))
    digest = hashlib.sha256()
    for shown, text in sources:
        digest.update(f"rules\0{shown}\0{len(text)}\0".encode())
        digest.update(text.encode("utf-8"))
    digest.update(("scripts\0" + "\0".join(scripts)).encode())
    digest.update(f"\0config\0{config_text}".encode())
    return TreeSnapshot(tuple(sources), scripts, config_text, digest.hexdigest(), tuple(problems))


def read_tree(paths: WatchedPaths) -> TreeSnapshot:
    """Read everything a compile depends on, again if a file changed while it was being read (an editor still
    saving), so the snapshot is one state of the tree rather than a mix of two."""
    for _ in range(STABLE_READ_ATTEMPTS):
        before = _signature(paths)
        snapshot = _read_once(paths)
        if _signature(paths) == before:
            break
    return snapshot


@dataclass(frozen=True)
class RulesDiff:
    """Rules by name: added, removed, changed (same name, other fingerprint), moved (an unnamed rule that does the same
    at another PATH:LINE: it keeps its state), and how many are the same."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    same: int
    moved: tuple[tuple[str, str], ...] = ()  # (old PATH:LINE, new PATH:LINE)

    @property
    def summary(self) -> str:
        moved = f" moved {len(self.moved)}" if self.moved else ""
        return f"+{len(self.added)} -{len(self.removed)} ~{len(self.changed)} ={self.same}{moved}"

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.moved)


def diff_graphs(old: EventGraph, new: EventGraph) -> RulesDiff:
    """Compare by rule name and fingerprint (what a rule does, not where it is written), in the new file order; an
    unnamed rule that went from one PATH:LINE to another doing the same is moved, not removed and added."""
    before = {rule.name: rule.fingerprint for rule in old.rules}
    after = {rule.name: rule.fingerprint for rule in new.rules}
    gone = {rule.state_key: rule.name for rule in old.rules if rule.name not in after and rule.state_key != rule.name}
    moved = tuple((gone[rule.state_key], rule.name) for rule in new.rules
                  if rule.name not in before and rule.state_key in gone)
    moved_from, moved_to = {a for a, _ in moved}, {b for _, b in moved}
    added = tuple(name for name in after if name not in before and name not in moved_to)
    removed = tuple(name for name in before if name not in after and name not in moved_from)
    changed = tuple(name for name, fp in after.items() if name in before and before[name] != fp)
    same = sum(1 for name, fp in after.items() if before.get(name) == fp)
    return RulesDiff(added, removed, changed, same, moved)


def at(diag: Diagnostic) -> str:
    """`path:line:col`, where a diagnostic points."""
    return f"{diag.span.path}:{diag.span.line}:{diag.span.col}"
