"""The AST (`dsl.ast`), built while lark parses: a `Span` on every node, and no parse tree in between.

`AstBuilder` is a lark `Transformer` given to the LALR parser (`transformer=`), so each grammar rule's callback
runs when the parser reduces it and lark never builds a tree or its position metadata (most of the old cost of
a parse). Positions come from the tokens: a node spans from its first token to the end of its last child.
Rules whose names start with `_` are inlined by lark (the transformer's default keeps a small tree for that).

It never raises: an exception raised in a callback would come out of the middle of the parser. The only
problems found here are those the grammar leaves to it on purpose: a filter or option written twice ("each at
most once" is clearer as a message than as a grammar that spells out every order), `and` mixed with `or`
without parentheses, and a word that has to be one of a few (`network none|default`). Everything about meaning
(unknown teams, field types, ranges) is in `dsl.checks`. Conditions are built in `dsl.builder_conditions`.

lark looks callbacks up by rule name, and inlined rules are named `_...` too (`_param`, `_part`): helpers here
are named `_build_...` so that none is taken for one. One builder serves every parse of its parser: `begin`
sets the file and line offset and empties the results, and the parser module runs one parse at a time.
"""

from __future__ import annotations

import re
from typing import Any

from lark import Token, Transformer

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
    EscalationStep,
    EventTrigger,
    Group,
    LabelMatch,
    Member,
    MessageTrigger,
    MissingTrigger,
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
    SilenceMatcher,
    SilenceWhere,
    Span,
    TaskTrigger,
    TeamDecl,
    When,
)
from dsl.builder_conditions import ConditionCallbacks, Extent, value_of
from dsl.diagnostics import Diagnostic
from dsl.network import NETWORK_WORDS, parse_allow_entry
from dsl.values import duration_seconds, size_bytes, unquote, unslash

# Re-exported: older callers import it from here.
__all__ = ["AstBuilder", "duration_seconds"]

NETWORKS = NETWORK_WORDS
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # Prometheus' and Alertmanager's label names
_CLAUSES = frozenset({When, RequireRole, RequireConfirmation, Dedupe, Group, RateLimit, CheckDisk})
_ALERT_FILTERS = {"status": "the alert status", "severity": "'severity'", "service": "'from'"}
_RUN_OPTIONS = {
    "sandboxed": "'sandboxed'",
    "timeout": "'timeout'",
    "retry": "'retry'",
    "backoff": "'backoff'",
    "memory": "'memory'",
    "network": "'network'",
    "args": "'args'",
}


class Piece:
    """A part of a construct on its way up (an option, a filter, a clause's `saying`): its kind, the text it
    covers and what it holds (a token, a list of tokens or of nodes)."""

    __slots__ = ("kind", "span", "value")

    def __init__(self, kind: str, span: Span, value: Any) -> None:
        self.kind = kind
        self.span = span
        self.value = value


class Inlined:
    """What a rule lark inlines (`_part`, `__line_rule_star_2`) gives its parent: only its children."""

    __slots__ = ("children",)

    def __init__(self, children: list[Any]) -> None:
        self.children = children


class AstBuilder(ConditionCallbacks, Transformer[Token, Any]):
    """lark callbacks, one per grammar rule, building the AST of the text being parsed."""

    # lark calls this for every rule without a callback of its own: the inlined ones (`_...`, `__..._star_N`).
    def __default__(self, data: str, children: list[Any], meta: object) -> Inlined:
        return Inlined(children)

    def __init__(self) -> None:
        super().__init__(visit_tokens=False)
        self.begin("", 0)

    def begin(self, path: str, line_offset: int) -> None:
        """Start on the text of `path` whose first line is line `line_offset + 1` of the file."""
        self.path = path
        self.line_offset = line_offset
        self.items: list[Rule | TeamDecl] = []
        self.diagnostics: list[Diagnostic] = []

    # ---- positions ---------------------------------------------------------------------------------------

    # lark's tokens type their positions `int | None`; the lexer sets all of them on every token it makes.

    def span(self, token: Token) -> Span:
        offset = self.line_offset
        return Span(
            self.path, token.line + offset, token.column, token.end_line + offset, token.end_column  # type: ignore[operator,arg-type]
        )

    def cover(self, first: Token | Extent, last: object) -> Span:
        """From the start of `first` to the end of `last` (a token, or anything with a span)."""
        offset = self.line_offset
        if type(first) is Token:  # (the lexer makes exactly Tokens; `type` is quicker than isinstance here)
            line: int = first.line + offset  # type: ignore[operator]
            col: int = first.column  # type: ignore[assignment]
        else:
            line, col = first.span.line, first.span.col  # type: ignore[union-attr]
        if type(last) is Token:
            return Span(self.path, line, col, last.end_line + offset, last.end_column)  # type: ignore[operator,arg-type]
        end: Span = last.span  # type: ignore[attr-defined]
        return Span(self.path, line, col, end.end_line, end.end_col)

    def error(self, span: Span, message: str, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(span, message, hint=hint))

    # ---- top level ---------------------------------------------------------------------------------------

    def start(self, children: list[Rule | TeamDecl]) -> list[Rule | TeamDecl]:
        return children

    def team(self, children: list[Any]) -> TeamDecl:
        name = children[1]
        members = tuple(child for child in children[3:] if isinstance(child, Member))
        team = TeamDecl(str(name), members, self.cover(children[0], children[-1]), self.span(name))
        self.items.append(team)
        return team

    def member(self, children: list[Token]) -> Member:
        first = children[0]
        span = self.cover(first, children[-1])
        if first.type == "PERSON":
            return Member(None, str(first)[1:], span)
        return Member(str(first), unquote(children[1]), span)

    def line_rule(self, children: list[Any]) -> Rule:
        return self._build_rule(None, children[0], children, 0)

    def block_rule(self, children: list[Any]) -> Rule:
        return self._build_rule(children[1], children[0], children, 3)

    def _build_rule(self, name: Token | None, first: Any, children: list[Any], at: int) -> Rule:
        clauses: list[Clause] = []
        actions: list[Action] = []
        for part in children[at + 1 :]:
            (clauses if type(part) in _CLAUSES else actions).append(part)
        rule = Rule(
            str(name) if name is not None else None,
            children[at],
            tuple(clauses),
            tuple(actions),
            self.cover(first, children[-1]),
            self.span(name) if name is not None else None,
        )
        self.items.append(rule)
        return rule

    # ---- triggers ----------------------------------------------------------------------------------------

    def alert_trigger(self, children: list[Any]) -> AlertTrigger:
        values = self._once(children[2:], _ALERT_FILTERS, repeatable="label")
        status = values.get("status")
        severity = values.get("severity")
        service = values.get("service")
        severity_op, severity_name = severity.value if severity is not None else ("=", None)
        return AlertTrigger(
            status=str(status.value) if status is not None else "firing",
            severity=str(severity_name) if severity_name is not None else None,
            service=str(service.value) if service is not None else None,
            span=self.cover(children[0], children[-1]),
            severity_span=self.span(severity_name) if severity_name is not None else None,
            severity_op=severity_op,
            labels=tuple(child.value for child in children[2:] if child.kind == "label"),
            kind_span=self.span(children[1]),
        )

    def status(self, children: list[Token]) -> Piece:
        return Piece("status", self.span(children[0]), children[0])

    def severity(self, children: list[Token]) -> Piece:
        op = str(children[1]) if len(children) == 3 else "="
        return Piece("severity", self.cover(children[0], children[-1]), (op, children[-1]))

    def severity_op(self, children: list[Token]) -> Token:
        return children[0]

    def service(self, children: list[Token]) -> Piece:
        return Piece("service", self.cover(children[0], children[1]), children[1])

    def label(self, children: list[Token]) -> Piece:
        _, name, op, value = children
        span = self.cover(children[0], value)
        text = unslash(value) if value.type == "REGEX" else value_of(value).text
        return Piece("label", span, LabelMatch(str(name), str(op), text, span, self.span(value)))

    def command_trigger(self, children: list[Any]) -> CommandTrigger:
        return CommandTrigger(
            name=str(children[2]),
            span=self.cover(children[0], children[-1]),
            params=tuple(children[3:]),
            kind_span=self.span(children[1]),
        )

    def param(self, children: list[Any]) -> Param:
        return self._build_param(children, children[1], children[3], None, optional=False)

    def optional_param(self, children: list[Any]) -> Param:
        default = children[-3] if len(children) > 7 else None
        return self._build_param(children, children[2], children[4], default, optional=True)

    def _build_param(
        self, children: list[Any], name: Token, kind: Piece, default: Token | None, *, optional: bool
    ) -> Param:
        words = kind.value
        return Param(
            name=str(name),
            type="choice" if len(words) > 1 else words[0],
            choices=tuple(words) if len(words) > 1 else (),
            optional=optional,
            default=value_of(default, self.span(default)) if default is not None else None,
            span=self.cover(children[0], children[-1]),
            type_span=kind.span,
        )

    def param_type(self, children: list[Token]) -> Piece:
        words = [str(t) for t in children if t.type == "NAME"]
        return Piece("param_type", self.cover(children[0], children[-1]), words)

    def button_trigger(self, children: list[Token]) -> ButtonTrigger:
        name = children[2]
        return ButtonTrigger(str(name), self.cover(children[0], name), self.span(name), self.span(children[1]))

    def task_trigger(self, children: list[Any]) -> TaskTrigger:
        script = children[2]
        status = children[3] if len(children) > 3 else None
        return TaskTrigger(
            str(script),
            str(status) if status is not None else None,
            self.cover(children[0], children[-1]),
            self.span(script),
            self.span(children[1]),
        )

    def task_status(self, children: list[Token]) -> Token:
        return children[0]

    def missing_trigger(self, children: list[Token]) -> MissingTrigger:
        _, _, _, name, _, duration = children
        return MissingTrigger(str(name), duration_seconds(duration), self.cover(children[0], duration),
                              self.span(name), self.span(duration))

    def schedule_trigger(self, children: list[Any]) -> ScheduleTrigger:
        spec: Piece = children[2]
        zone: Piece | None = children[3] if len(children) > 3 else None
        how, last = spec.kind, spec.value
        return ScheduleTrigger(
            how=how,
            span=self.cover(children[0], children[-1]),
            every_s=duration_seconds(last) if how == "every" else None,
            at=str(last) if how == "daily" else None,
            cron=unquote(last) if how == "cron" else None,
            zone=str(zone.value) if zone is not None else None,
            spec_span=self.span(last),
            zone_span=self.span(zone.value) if zone is not None else None,
            kind_span=self.span(children[1]),
        )

    def every(self, children: list[Token]) -> Piece:
        return Piece("every", self.cover(children[0], children[-1]), children[-1])

    def daily(self, children: list[Token]) -> Piece:
        return Piece("daily", self.cover(children[0], children[-1]), children[-1])

    def cron(self, children: list[Token]) -> Piece:
        return Piece("cron", self.cover(children[0], children[-1]), children[-1])

    def zone(self, children: list[Token]) -> Piece:
        return Piece("zone", self.cover(children[0], children[-1]), children[-1])

    def event_trigger(self, children: list[Token]) -> EventTrigger:
        name = children[2]
        return EventTrigger(str(name), self.cover(children[0], name), self.span(name), self.span(children[1]))

    def message_trigger(self, children: list[Token]) -> MessageTrigger:
        regex = children[3]
        return MessageTrigger(unslash(regex), self.cover(children[0], regex), self.span(regex), self.span(children[1]))

    # ---- clauses -----------------------------------------------------------------------------------------

    def when(self, children: list[Any]) -> When:
        condition: Extent = children[1]
        return When(condition.node, self.cover(children[0], condition))

    def require_role(self, children: list[Token]) -> RequireRole:
        role = children[2]
        return RequireRole(role=str(role), span=self.cover(children[0], role), role_span=self.span(role))

    def require_confirmation(self, children: list[Token]) -> RequireConfirmation:
        role = children[4] if len(children) > 4 else None
        within = children[-1]
        return RequireConfirmation(
            str(role) if role is not None else None,
            duration_seconds(within),
            self.cover(children[0], within),
            self.span(role) if role is not None else None,
        )

    def dedupe(self, children: list[Token]) -> Dedupe:
        name, duration = children[2], children[4]
        return Dedupe(str(name), duration_seconds(duration), self.cover(children[0], duration), self.span(name))

    def group(self, children: list[Token]) -> Group:
        name, duration = children[2], children[4]
        return Group(str(name), duration_seconds(duration), self.cover(children[0], duration), self.span(name))

    def rate_limit(self, children: list[Token]) -> RateLimit:
        key = children[6] if len(children) > 6 else None
        return RateLimit(
            int(children[2]),
            duration_seconds(children[4]),
            str(key) if key is not None else None,
            self.cover(children[0], children[-1]),
            self.span(key) if key is not None else None,
        )

    def check_disk(self, children: list[Token]) -> CheckDisk:
        size = children[4]
        return CheckDisk(unquote(children[2]), size_bytes(size), self.cover(children[0], children[-1]), str(size))

    # ---- actions -----------------------------------------------------------------------------------------

    def notify(self, children: list[Any]) -> Notify:
        target = children[1]
        saying = buttons = None
        for child in children[2:]:
            if child.kind == "saying":
                saying = saying or child
            else:
                buttons = buttons or child
        template = saying.value if saying is not None else None
        return Notify(
            team=str(target),
            buttons=buttons is not None,
            span=self.cover(children[0], children[-1]),
            team_span=self.span(target),
            template=unquote(template) if template is not None else None,
            template_span=self.span(template) if template is not None else None,
            button_list=tuple(buttons.value) if buttons is not None else (),
        )

    def saying(self, children: list[Token]) -> Piece:
        return Piece("saying", self.cover(children[0], children[1]), children[1])

    def buttons(self, children: list[Any]) -> Piece:
        refs = [child for child in children[2:] if isinstance(child, ButtonRef)]
        return Piece("buttons", self.cover(children[0], children[-1]), refs)

    def button(self, children: list[Token]) -> ButtonRef:
        arg = " ".join(str(word) for word in children[1:]) or None  # a duration, or "until resolved"
        return ButtonRef(str(children[0]), arg, self.cover(children[0], children[-1]))

    def reply(self, children: list[Token]) -> Reply:
        text = children[1]
        return Reply(unquote(text), self.cover(children[0], text), self.span(text))

    def run(self, children: list[Any]) -> RunScript:
        options = self._once(children[2:], _RUN_OPTIONS)
        timeout = options.get("timeout")
        duration = timeout.value if timeout is not None else None
        memory = options.get("memory")
        size = memory.value if memory is not None else None
        network = options.get("network")
        network_word = network.value[0] if network is not None else None
        allow = self._network_allow(network) if network is not None else ()
        retry = options.get("retry")
        retries = retry.value if retry is not None else None
        backoff = options.get("backoff")
        backoff_duration = backoff.value if backoff is not None else None
        args = options.get("args")
        arg_tokens = args.value if args is not None else []
        script = children[1]
        return RunScript(
            script=str(script),
            sandboxed="sandboxed" in options,
            timeout_s=duration_seconds(duration) if duration is not None else None,
            span=self.cover(children[0], children[-1]),
            script_span=self.span(script),
            timeout_span=self.span(duration) if duration is not None else None,
            memory_bytes=size_bytes(size) if size is not None else None,
            memory_text=str(size) if size is not None else None,
            network=str(network_word) if network_word is not None else None,
            network_allow=allow,
            args=tuple(unquote(t) for t in arg_tokens),
            args_spans=tuple(self.span(t) for t in arg_tokens),
            retries=int(retries) if retries is not None else 0,
            retries_span=self.span(retries) if retries is not None else None,
            backoff_s=duration_seconds(backoff_duration) if backoff_duration is not None else None,
            backoff_span=self.span(backoff_duration) if backoff_duration is not None else None,
            memory_span=self.span(size) if size is not None else None,
        )

    def sandboxed(self, children: list[Token]) -> Piece:
        return Piece("sandboxed", self.span(children[0]), None)

    def timeout(self, children: list[Token]) -> Piece:
        return Piece("timeout", self.cover(children[0], children[1]), children[1])

    def retry(self, children: list[Token]) -> Piece:
        return Piece("retry", self.cover(children[0], children[-1]), children[1])

    def backoff(self, children: list[Token]) -> Piece:
        return Piece("backoff", self.cover(children[0], children[1]), children[1])

    def memory(self, children: list[Token]) -> Piece:
        return Piece("memory", self.cover(children[0], children[1]), children[1])

    def network(self, children: list[Token]) -> Piece:
        entries = [t for t in children[2:] if t.type == "STRING"]
        return Piece("network", self.cover(children[0], children[-1]), (children[1], entries))

    def _network_allow(self, piece: Piece) -> tuple[str, ...]:
        """The allow-list of `network allow "A:P", ...`, each entry checked; errors at the word or entry at fault."""
        word, entries = piece.value
        if str(word) not in NETWORKS:
            self.error(
                self.span(word),
                f"expected 'none', 'default' or 'allow' after 'network', found '{word}'",
                hint="'network none' (the default) gives the script no network; 'network default' gives it one "
                     "(the host's own addresses blocked); 'network allow \"HOST:PORT\", ...' only those",
            )
            return ()
        if str(word) != "allow":
            if entries:
                self.error(self.span(entries[0]), f"'network {word}' takes no addresses",
                           hint="to allow only some destinations, write 'network allow \"HOST:PORT\", ...'")
            return ()
        if not entries:
            self.error(self.span(word), "'network allow' needs at least one \"HOST:PORT\"",
                       hint='e.g. network allow "192.0.2.10:443"; no network at all is \'network none\'')
            return ()
        allowed: list[str] = []
        for token in entries:
            text = unquote(token)
            try:
                parse_allow_entry(text)
            except ValueError as exc:
                self.error(self.span(token), str(exc),
                           hint='each entry is "HOST:PORT", e.g. "192.0.2.10:443" or "db.example.org:5432"')
                continue
            allowed.append(text)
        return tuple(allowed)

    def args(self, children: list[Token]) -> Piece:
        return Piece("args", self.cover(children[0], children[-1]), children[1:])

    def emit(self, children: list[Token]) -> Emit:
        name = children[1]
        return Emit(str(name), self.cover(children[0], name), self.span(name))

    def silence(self, children: list[Token]) -> Silence:
        by, last = children[3], children[-1]
        is_field = last.type == "PLACEHOLDER"
        return Silence(
            str(by),
            None if is_field else duration_seconds(last),
            str(last)[1:-1] if is_field else None,
            self.cover(children[0], last),
            self.span(by),
            self.span(last),
        )

    def silence_matcher(self, children: list[Token]) -> SilenceMatcher:
        label, value = children[0], children[2]
        if not LABEL_NAME.fullmatch(str(label)):
            self.error(self.span(label), f"'{label}' is not a label name",
                       hint="a label name is letters, digits and _ and does not start with a digit, "
                            "as Alertmanager's: service, env, alertname")
        quoted = value.type == "STRING"
        return SilenceMatcher(str(label), unquote(value) if quoted else str(value), quoted,
                              self.cover(label, value), self.span(label), self.span(value))

    def silence_where(self, children: list[Any]) -> SilenceWhere:
        span = self.cover(children[0], children[-1])
        matchers = tuple(c for c in children if isinstance(c, SilenceMatcher))
        example = 'silence alert where service = "{command.service}" for 1h'
        if not matchers:
            self.error(span, "'silence alert where' needs at least one LABEL = VALUE", hint=example)
        for i, matcher in enumerate(matchers):
            if any(m.label == matcher.label for m in matchers[:i]):
                self.error(matcher.label_span or matcher.span,
                           f"label '{matcher.label}' is matched twice in this silence")
        last = children[-1]
        if not (isinstance(last, Token) and last.type in ("DURATION", "PLACEHOLDER")):
            self.error(span, "a silence needs an end: add 'for D' (30m, 1h, or a {field} such as {button.arg})",
                       hint=example)
            return SilenceWhere(matchers, None, None, span)
        is_field = last.type == "PLACEHOLDER"
        return SilenceWhere(matchers, None if is_field else duration_seconds(last),
                            str(last)[1:-1] if is_field else None, span, self.span(last))

    def escalate(self, children: list[Any]) -> Escalate:
        """Steps, then at most one repeat, last; the order of the delays is the checks' (dsl.checks_rule)."""
        span = self.cover(children[0], children[-1])
        items = [c for c in children[1:-2] if isinstance(c, Piece)]
        steps = tuple(p.value for p in items if p.kind == "step")
        repeats = [p for p in items if p.kind == "repeat"]
        if not steps:
            self.error(span, "an escalation needs at least one step such as 'to oncall after 5m'",
                       hint="escalate to oncall after 5m, repeat every 30m until acknowledged")
        for extra in repeats[1:]:
            self.error(extra.span, "'repeat every' is given twice in this escalation")
        if repeats and items[-1] is not repeats[-1]:
            self.error(repeats[0].span, "'repeat every' comes last, after the steps",
                       hint="escalate to oncall after 5m, to managers after 15m, repeat every 30m until acknowledged")
        repeat = repeats[0] if repeats else None
        return Escalate(steps, span, duration_seconds(repeat.value) if repeat is not None else None,
                        repeat.span if repeat is not None else None)

    def escalate_step(self, children: list[Token]) -> Piece:
        _, target, _, after = children
        span = self.cover(children[0], after)
        return Piece("step", span, EscalationStep(str(target), duration_seconds(after), span, self.span(target),
                                                   self.span(after)))

    def escalate_repeat(self, children: list[Token]) -> Piece:
        return Piece("repeat", self.cover(children[0], children[-1]), children[-1])

    def _once(self, pieces: list[Piece], words: dict[str, str], repeatable: str = "") -> dict[str, Piece]:
        """The pieces by kind; a kind given twice is reported at its second place."""
        seen: dict[str, Piece] = {}
        for piece in pieces:
            kind = piece.kind
            if kind == repeatable:
                continue
            if kind in seen:
                message = f"{words[kind]} is given twice; the first is at column {seen[kind].span.col}"
                self.error(piece.span, message, "keep one of them")
                continue
            seen[kind] = piece
        return seen
