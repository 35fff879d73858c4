"""lark's parse tree to the AST (`dsl.ast`), with a `Span` on every node.

This is a plain walk over the tree, not a lark `Transformer`, and it never raises: exceptions raised inside
a transformer come out wrapped in lark's `VisitError`. The only problems found here are those the grammar
leaves to it on purpose: a filter or option written twice ("each at most once" is clearer as a message than
as a grammar that spells out every order), `and` mixed with `or` without parentheses, and a word that has to
be one of a few (`network none|default`). Everything about meaning (unknown teams, field types) is in
`dsl.checks`. Conditions are built in `dsl.builder_conditions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from lark import Token, Tree

from dsl.ast import (
    Action,
    AlertTrigger,
    ButtonRef,
    ButtonTrigger,
    CheckDisk,
    Clause,
    CommandTrigger,
    Dedupe,
    Emit,
    Escalate,
    EventTrigger,
    Group,
    LabelMatch,
    Member,
    MessageTrigger,
    Notify,
    Param,
    RateLimit,
    Reply,
    RequireConfirmation,
    RequireRole,
    Rule,
    RunScript,
    ScheduleTrigger,
    Silence,
    Span,
    TaskTrigger,
    TeamDecl,
    Trigger,
    When,
)
from dsl.builder_conditions import build_condition, value_of
from dsl.diagnostics import Diagnostic
from dsl.values import duration_seconds, size_bytes, unquote, unslash

# Re-exported: older callers import it from here.
__all__ = ["build_rules", "duration_seconds"]

NETWORKS = ("none", "default")


def build_rules(
    tree: Tree[Token], *, path: str, line_offset: int
) -> tuple[list[Rule], list[TeamDecl], list[Diagnostic]]:
    """The rules and teams in `tree` (parsed from the lines after `line_offset`), and problems found on the way."""
    builder = _Builder(path, line_offset)
    rules: list[Rule] = []
    teams: list[TeamDecl] = []
    for node in _subtrees(tree):
        if node.data == "team":
            teams.append(builder.team(node))
        else:
            rules.append(builder.rule(node))
    return rules, teams, builder.diagnostics


@dataclass
class _Builder:
    path: str
    line_offset: int
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def span(self, node: Tree[Token] | Token) -> Span:
        if isinstance(node, Token):
            line, col, end_line, end_col = node.line, node.column, node.end_line, node.end_column
        else:
            meta = node.meta
            line, col, end_line, end_col = meta.line, meta.column, meta.end_line, meta.end_column
        assert line is not None and col is not None and end_line is not None and end_col is not None
        return Span(self.path, line + self.line_offset, col, end_line + self.line_offset, end_col)

    def cover(self, first: Tree[Token] | Token, last: Tree[Token] | Token) -> Span:
        """From the start of `first` to the end of `last`: a rule's span without the line end lark adds."""
        start, end = self.span(first), self.span(last)
        return Span(self.path, start.line, start.col, end.end_line, end.end_col)

    def error(self, span: Span, message: str, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(span, message, hint=hint))

    # ---- top level ---------------------------------------------------------------------------------------

    def team(self, node: Tree[Token]) -> TeamDecl:
        name = _token(node, "NAME")
        members = []
        for member in _subtrees(node):
            first = member.children[0]
            assert isinstance(first, Token)
            if first.type == "PERSON":
                members.append(Member(None, str(first)[1:], self.span(member)))
            else:
                members.append(Member(str(first), unquote(str(_token(member, "STRING"))), self.span(member)))
        last = node.children[-1]
        return TeamDecl(str(name), tuple(members), self.cover(node.children[0], last), self.span(name))

    def rule(self, node: Tree[Token]) -> Rule:
        name_token = _token(node, "NAME") if node.data == "block_rule" else None
        parts = list(_subtrees(node))
        trigger = self.trigger(parts[0])
        clauses: list[Clause] = []
        actions: list[Action] = []
        for part in parts[1:]:
            kind, build = _PARTS[str(part.data)]
            built = build(self, part)
            (clauses if kind == "clause" else actions).append(built)  # type: ignore[arg-type]
        return Rule(
            name=str(name_token) if name_token is not None else None,
            trigger=trigger,
            clauses=tuple(clauses),
            actions=tuple(actions),
            span=self.cover(node.children[0], _last_child(node)),
            name_span=self.span(name_token) if name_token is not None else None,
        )

    # ---- triggers ----------------------------------------------------------------------------------------

    def trigger(self, node: Tree[Token]) -> Trigger:
        kind_span = self.span(node.children[1])  # the word after 'on'
        return _TRIGGERS[str(node.data)](self, node, kind_span)

    def alert(self, node: Tree[Token], kind_span: Span) -> AlertTrigger:
        values = self._once(
            node,
            {"status": "the alert status", "severity": "'severity'", "service": "'from'"},
            repeatable={"label"},
        )
        status = values.get("status")
        severity = values.get("severity")
        service = values.get("service")
        severity_name = _token(severity, "NAME") if severity is not None else None
        op_node = _child(severity, "severity_op") if severity is not None else None
        labels = tuple(self.label(child) for child in _subtrees(node) if child.data == "label")
        return AlertTrigger(
            status=str(status.children[0]) if status is not None else "firing",
            severity=str(severity_name) if severity_name is not None else None,
            service=str(_token(service, "NAME")) if service is not None else None,
            span=self.span(node),
            severity_span=self.span(severity_name) if severity_name is not None else None,
            severity_op=str(op_node.children[0]) if op_node is not None else "=",
            labels=labels,
            kind_span=kind_span,
        )

    def label(self, node: Tree[Token]) -> LabelMatch:
        _, name, op, value = node.children
        assert isinstance(value, Token) and isinstance(op, Token)
        text = unslash(value) if value.type == "REGEX" else value_of(value).text
        return LabelMatch(str(name), str(op), text, self.span(node), self.span(value))

    def command(self, node: Tree[Token], kind_span: Span) -> CommandTrigger:
        params = tuple(self.param(child) for child in _subtrees(node))
        name = _token(node, "NAME")
        return CommandTrigger(name=str(name), span=self.span(node), params=params, kind_span=kind_span)

    def param(self, node: Tree[Token]) -> Param:
        type_node = _child(node, "param_type")
        assert type_node is not None
        words = [str(t) for t in type_node.children if isinstance(t, Token) and t.type == "NAME"]
        default_token = node.children[-3] if node.data == "optional_param" and len(node.children) > 7 else None
        default = None
        if isinstance(default_token, Token):
            default = value_of(default_token, self.span(default_token))
        return Param(
            name=str(_token(node, "NAME")),
            type="choice" if len(words) > 1 else words[0],
            choices=tuple(words) if len(words) > 1 else (),
            optional=node.data == "optional_param",
            default=default,
            span=self.span(node),
            type_span=self.span(type_node),
        )

    def button(self, node: Tree[Token], kind_span: Span) -> ButtonTrigger:
        name = _token(node, "NAME")
        return ButtonTrigger(str(name), self.span(node), self.span(name), kind_span)

    def task(self, node: Tree[Token], kind_span: Span) -> TaskTrigger:
        script = _token(node, "SCRIPT")
        status = _child(node, "task_status")
        return TaskTrigger(
            str(script),
            str(status.children[0]) if status is not None else None,
            self.span(node),
            self.span(script),
            kind_span,
        )

    def schedule(self, node: Tree[Token], kind_span: Span) -> ScheduleTrigger:
        spec = list(_subtrees(node))[0]
        zone_node = _child(node, "zone")
        zone = _token(zone_node, "ZONE") if zone_node is not None else None
        how = {"every": "every", "daily": "daily", "cron": "cron"}[str(spec.data)]
        last = spec.children[-1]
        assert isinstance(last, Token)
        return ScheduleTrigger(
            how=how,
            span=self.span(node),
            every_s=duration_seconds(last) if how == "every" else None,
            at=str(last) if how == "daily" else None,
            cron=unquote(last) if how == "cron" else None,
            zone=str(zone) if zone is not None else None,
            spec_span=self.span(last),
            zone_span=self.span(zone) if zone is not None else None,
            kind_span=kind_span,
        )

    def event(self, node: Tree[Token], kind_span: Span) -> EventTrigger:
        name = _token(node, "NAME")
        return EventTrigger(str(name), self.span(node), self.span(name), kind_span)

    def message(self, node: Tree[Token], kind_span: Span) -> MessageTrigger:
        regex = _token(node, "REGEX")
        return MessageTrigger(unslash(regex), self.span(node), self.span(regex), kind_span)

    # ---- clauses -----------------------------------------------------------------------------------------

    def when(self, node: Tree[Token]) -> When:
        condition_node = _child(node, "condition")
        assert condition_node is not None
        return When(build_condition(condition_node, self.span, self.diagnostics), self.span(node))

    def require_role(self, node: Tree[Token]) -> RequireRole:
        role = _token(node, "NAME")
        return RequireRole(role=str(role), span=self.span(node), role_span=self.span(role))

    def require_confirmation(self, node: Tree[Token]) -> RequireConfirmation:
        role = _maybe_token(node, "NAME")
        within = _token(node, "DURATION")
        return RequireConfirmation(
            str(role) if role is not None else None,
            duration_seconds(within),
            self.span(node),
            self.span(role) if role is not None else None,
        )

    def dedupe(self, node: Tree[Token]) -> Dedupe:
        name = _token(node, "FIELD")
        return Dedupe(str(name), duration_seconds(_token(node, "DURATION")), self.span(node), self.span(name))

    def group(self, node: Tree[Token]) -> Group:
        name = _token(node, "FIELD")
        return Group(str(name), duration_seconds(_token(node, "DURATION")), self.span(node), self.span(name))

    def rate_limit(self, node: Tree[Token]) -> RateLimit:
        key = _maybe_token(node, "FIELD")
        return RateLimit(
            int(_token(node, "INT")),
            duration_seconds(_token(node, "DURATION")),
            str(key) if key is not None else None,
            self.span(node),
            self.span(key) if key is not None else None,
        )

    def check_disk(self, node: Tree[Token]) -> CheckDisk:
        size = _token(node, "SIZE")
        return CheckDisk(unquote(_token(node, "STRING")), size_bytes(size), self.span(node), str(size))

    # ---- actions -----------------------------------------------------------------------------------------

    def notify(self, node: Tree[Token]) -> Notify:
        buttons = _child(node, "buttons")
        saying = _child(node, "saying")
        target = node.children[1]
        assert isinstance(target, Token)
        template = _token(saying, "STRING") if saying is not None else None
        button_list = ()
        if buttons is not None:
            button_list = tuple(self.button_ref(child) for child in _subtrees(buttons))
        return Notify(
            team=str(target),
            buttons=buttons is not None,
            span=self.span(node),
            team_span=self.span(target),
            template=unquote(template) if template is not None else None,
            template_span=self.span(template) if template is not None else None,
            button_list=button_list,
        )

    def button_ref(self, node: Tree[Token]) -> ButtonRef:
        arg = _maybe_token(node, "DURATION")
        return ButtonRef(str(_token(node, "NAME")), str(arg) if arg is not None else None, self.span(node))

    def reply(self, node: Tree[Token]) -> Reply:
        text = _token(node, "STRING")
        return Reply(unquote(text), self.span(node), self.span(text))

    def run(self, node: Tree[Token]) -> RunScript:
        options = self._once(
            node,
            {
                "sandboxed": "'sandboxed'",
                "timeout": "'timeout'",
                "retry": "'retry'",
                "backoff": "'backoff'",
                "memory": "'memory'",
                "network": "'network'",
                "args": "'args'",
            },
        )
        timeout = options.get("timeout")
        duration = _token(timeout, "DURATION") if timeout is not None else None
        memory = options.get("memory")
        size = _token(memory, "SIZE") if memory is not None else None
        network = options.get("network")
        network_word = _token(network, "NAME") if network is not None else None
        if network_word is not None and str(network_word) not in NETWORKS:
            self.error(
                self.span(network_word),
                f"expected 'none' or 'default' after 'network', found '{network_word}'",
                hint="'network none' (the default) gives the script no network; 'network default' gives it one",
            )
        retry = options.get("retry")
        retries = _token(retry, "INT") if retry is not None else None
        backoff = options.get("backoff")
        backoff_duration = _token(backoff, "DURATION") if backoff is not None else None
        args = options.get("args")
        arg_tokens = [t for t in args.children[1:] if isinstance(t, Token)] if args is not None else []
        script = _token(node, "SCRIPT")
        return RunScript(
            script=str(script),
            sandboxed="sandboxed" in options,
            timeout_s=duration_seconds(duration) if duration is not None else None,
            span=self.span(node),
            script_span=self.span(script),
            timeout_span=self.span(duration) if duration is not None else None,
            memory_bytes=size_bytes(size) if size is not None else None,
            memory_text=str(size) if size is not None else None,
            network=str(network_word) if network_word is not None else None,
            args=tuple(unquote(t) for t in arg_tokens),
            args_spans=tuple(self.span(t) for t in arg_tokens),
            retries=int(retries) if retries is not None else 0,
            retries_span=self.span(retries) if retries is not None else None,
            backoff_s=duration_seconds(backoff_duration) if backoff_duration is not None else None,
            backoff_span=self.span(backoff_duration) if backoff_duration is not None else None,
        )

    def emit(self, node: Tree[Token]) -> Emit:
        name = _token(node, "NAME")
        return Emit(str(name), self.span(node), self.span(name))

    def silence(self, node: Tree[Token]) -> Silence:
        by = _token(node, "FIELD")
        last = node.children[-1]
        assert isinstance(last, Token)
        is_field = last.type == "PLACEHOLDER"
        return Silence(
            str(by),
            None if is_field else duration_seconds(last),
            str(last)[1:-1] if is_field else None,
            self.span(node),
            self.span(by),
            self.span(last),
        )

    def escalate(self, node: Tree[Token]) -> Escalate:
        target = node.children[2]
        assert isinstance(target, Token)
        after = _token(node, "DURATION")
        return Escalate(str(target), duration_seconds(after), self.span(node), self.span(target))

    def _once(
        self, node: Tree[Token], words: dict[str, str], repeatable: frozenset[str] | set[str] = frozenset()
    ) -> dict[str, Tree[Token]]:
        """The option subtrees of `node` by kind; a kind given twice is reported at its second place."""
        seen: dict[str, Tree[Token]] = {}
        for child in _subtrees(node):
            kind = str(child.data)
            if kind in repeatable:
                continue
            if kind in seen:
                first = self.span(seen[kind])
                message = f"{words[kind]} is given twice; the first is at column {first.col}"
                self.error(self.span(child), message, "keep one of them")
                continue
            seen[kind] = child
        return seen


# Triggers by grammar rule.
_TRIGGERS: dict[str, Callable[[_Builder, Tree[Token], Span], Trigger]] = {
    "alert_trigger": _Builder.alert,
    "command_trigger": _Builder.command,
    "button_trigger": _Builder.button,
    "task_trigger": _Builder.task,
    "schedule_trigger": _Builder.schedule,
    "event_trigger": _Builder.event,
    "message_trigger": _Builder.message,
}

# Clauses and actions by grammar rule; a new clause or action is one entry here and one method above.
_PARTS: dict[str, tuple[str, Callable[[_Builder, Tree[Token]], Clause | Action]]] = {
    "when": ("clause", _Builder.when),
    "require_role": ("clause", _Builder.require_role),
    "require_confirmation": ("clause", _Builder.require_confirmation),
    "dedupe": ("clause", _Builder.dedupe),
    "group": ("clause", _Builder.group),
    "rate_limit": ("clause", _Builder.rate_limit),
    "check_disk": ("clause", _Builder.check_disk),
    "notify": ("action", _Builder.notify),
    "reply": ("action", _Builder.reply),
    "run": ("action", _Builder.run),
    "emit": ("action", _Builder.emit),
    "silence": ("action", _Builder.silence),
    "escalate": ("action", _Builder.escalate),
}


def _subtrees(node: Tree[Token]) -> Iterator[Tree[Token]]:
    return (child for child in node.children if isinstance(child, Tree))


def _child(node: Tree[Token], data: str) -> Tree[Token] | None:
    return next((child for child in _subtrees(node) if child.data == data), None)


def _token(node: Tree[Token], kind: str) -> Token:
    return next(child for child in node.children if isinstance(child, Token) and child.type == kind)


def _maybe_token(node: Tree[Token], kind: str) -> Token | None:
    return next((child for child in node.children if isinstance(child, Token) and child.type == kind), None)


def _last_child(node: Tree[Token]) -> Tree[Token] | Token:
    """The last node of a rule that is not a line end or a dedent (lark keeps neither, but be safe)."""
    return node.children[-1]

