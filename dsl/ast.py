"""The rule language's syntax tree: frozen dataclasses, each node with the `Span` it came from.

The parser builds these from lark's tree and nothing else; the checks, the formatter and the compiler read them.
Keeping the AST free of lark types means none of them depends on how the text was parsed.

Besides `span` (the whole construct), a node keeps the span of each name it holds (`team_span`, `role_span`,
...) so that a message about an unknown name points at the name, not at the whole line. They default to None
so tests and tools can build nodes by hand. Values are kept as written (a duration as its seconds, a literal as
its text); what a literal must be depends on the field it is compared with, which only the checks know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from dsl.frozen import quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class Span:
    """Where a node sits in its file: 1-based line and column; `end_col` is one past the last character."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int

    @property
    def location(self) -> str:
        """`PATH:LINE`, the form used to name unnamed rules and to point at another rule in a message."""
        return f"{self.path}:{self.line}"


@quick_init
@dataclass(frozen=True, slots=True)
class Value:
    """A literal as written: `kind` is "word" (bare: a word, number or duration), "text" (quoted) or "person"."""

    text: str
    kind: str
    span: Span | None = None


# ---- team declarations --------------------------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class Member:
    """One member of a team: a chat room on a platform (`chat "ops"`) or a person (`@alice`, platform None)."""

    platform: str | None
    address: str
    span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class TeamDecl:
    """`team NAME = MEMBER, ...`: a notification target declared in a rule file."""

    name: str
    members: tuple[Member, ...]
    span: Span
    name_span: Span | None = None


# ---- triggers -----------------------------------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class LabelMatch:
    """`label NAME = "v"` / `!=` / `=~ /re/` / `!~ /re/`."""

    name: str
    op: str
    value: str
    span: Span | None = None
    value_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class AlertTrigger:
    """`on alert [firing|resolved] [severity [OP] WORD] [from WORD] [label ...]`; status defaults to "firing".

    `severity critical` is equality; `severity >= warning` compares on the catalog's ordered scale.
    """

    status: str
    severity: str | None
    service: str | None
    span: Span
    severity_span: Span | None = None
    severity_op: str = "="
    labels: tuple[LabelMatch, ...] = ()
    kind_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Param:
    """`<NAME: TYPE>` or, optional, `[<NAME: TYPE = DEFAULT>]`; a choice type lists its words (`db|files`)."""

    name: str
    type: str
    choices: tuple[str, ...] = ()
    optional: bool = False
    default: Value | None = None
    span: Span | None = None
    type_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class CommandTrigger:
    """`on command NAME PARAM...`."""

    name: str
    span: Span
    params: tuple[Param, ...] = ()
    kind_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class ButtonTrigger:
    """`on button NAME`: someone pressed a button of that name."""

    name: str
    span: Span
    name_span: Span | None = None
    kind_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class TaskTrigger:
    """`on task SCRIPT [succeeded|failed|timed_out]`; no status means any finished task."""

    script: str
    status: str | None
    span: Span
    script_span: Span | None = None
    kind_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class MissingTrigger:
    """`on alert missing NAME for D`: a dead man's switch on the alert named NAME (its alertname)."""

    name: str
    for_s: float
    span: Span
    name_span: Span | None = None
    for_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class ScheduleTrigger:
    """`on schedule every D` | `every day at HH:MM` | `cron "m h dom mon dow"`, optionally `in ZONE`.

    `how` is "every", "daily" or "cron"; `every_s` the period, `at` the time of day, `cron` the expression.
    """

    how: str
    span: Span
    every_s: float | None = None
    at: str | None = None
    cron: str | None = None
    zone: str | None = None
    spec_span: Span | None = None
    zone_span: Span | None = None
    kind_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class EventTrigger:
    """`on event NAME`: another rule said `emit NAME`."""

    name: str
    span: Span
    name_span: Span | None = None
    kind_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class MessageTrigger:
    """`on message matching /REGEX/`: a chat message that the regex finds something in."""

    pattern: str
    span: Span
    pattern_span: Span | None = None
    kind_span: Span | None = None


Trigger: TypeAlias = (
    AlertTrigger | CommandTrigger | ButtonTrigger | TaskTrigger | ScheduleTrigger | EventTrigger | MessageTrigger
    | MissingTrigger
)

# ---- conditions ---------------------------------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class Compare:
    """`FIELD OP VALUE` with OP one of = != < <= > >=."""

    field: str
    op: str
    value: Value
    span: Span | None = None
    field_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class MemberOf:
    """`FIELD in [V, ...]`."""

    field: str
    values: tuple[Value, ...]
    span: Span | None = None
    field_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Matches:
    """`FIELD matches /REGEX/`: the regex finds something in the field's text."""

    field: str
    pattern: str
    span: Span | None = None
    field_span: Span | None = None
    pattern_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class IsSet:
    """`FIELD is set`: the event has the field (missing is not empty)."""

    field: str
    span: Span | None = None
    field_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Not:
    operand: Condition
    span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class AllOf:
    """`a and b and ...` (parentheses say where a nested `or` starts)."""

    operands: tuple[Condition, ...]
    span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class AnyOf:
    """`a or b or ...`."""

    operands: tuple[Condition, ...]
    span: Span | None = None


Condition: TypeAlias = Compare | MemberOf | Matches | IsSet | Not | AllOf | AnyOf

# ---- clauses ------------------------------------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class When:
    """`when CONDITION`: more to match than the trigger says; several `when` lines all have to hold."""

    condition: Condition
    span: Span


@quick_init
@dataclass(frozen=True, slots=True)
class RequireRole:
    """`require role NAME`: the caller must hold this role (checked by the engine before anything runs)."""

    role: str
    span: Span
    role_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class RequireConfirmation:
    """`require confirmation [by another ROLE] within D`: a second press confirms, by the caller or another."""

    role: str | None
    within_s: float
    span: Span
    role_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Dedupe:
    """`dedupe by FIELD for D`: an event with the same value of FIELD within D is dropped."""

    field: str
    for_s: float
    span: Span
    field_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Group:
    """`group by FIELD within D`: events with the same FIELD within D are handled as one batch."""

    field: str
    within_s: float
    span: Span
    field_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class RateLimit:
    """`at most N per D [per FIELD]`."""

    count: int
    per_s: float
    key: str | None
    span: Span
    key_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class CheckDisk:
    """`check disk "PATH" has SIZE free`: a pre-step; the actions do not run when the disk is fuller."""

    path: str
    free_bytes: int
    span: Span
    size_text: str = ""


Clause: TypeAlias = When | RequireRole | RequireConfirmation | Dedupe | Group | RateLimit | CheckDisk

# ---- actions ------------------------------------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class ButtonRef:
    """A button sent with a notification: `ack`, `mute 1h` (name and optional duration argument)."""

    name: str
    arg: str | None = None
    span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Notify:
    """`notify TARGET [saying "TEMPLATE"] [with buttons [B, ...]]`; TARGET is a team or `@person`."""

    team: str
    buttons: bool
    span: Span
    team_span: Span | None = None
    template: str | None = None
    template_span: Span | None = None
    button_list: tuple[ButtonRef, ...] = ()


@quick_init
@dataclass(frozen=True, slots=True)
class Reply:
    """`reply "TEMPLATE"`: answer in the conversation the event came from."""

    template: str
    span: Span
    template_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class RunScript:
    """`run SCRIPT [sandboxed] [timeout D] [retry N [times]] [backoff D] [memory M]
    [network none|default|allow "A:P", ...] [args "T" ...]`.
    [args "T" ...]`.

    `run` is always sandboxed; the word only says so. `retries` 0 means no retry; `backoff_s` None means the
    engine's default first delay.
    """

    script: str
    sandboxed: bool
    timeout_s: float | None
    span: Span
    script_span: Span | None = None
    timeout_span: Span | None = None
    memory_bytes: int | None = None
    memory_text: str | None = None
    network: str | None = None
    network_allow: tuple[str, ...] = ()  # `network allow "A:P", ...`: each "HOST:PORT" as written
    args: tuple[str, ...] = ()
    args_spans: tuple[Span, ...] = ()
    retries: int = 0
    retries_span: Span | None = None
    backoff_s: float | None = None
    backoff_span: Span | None = None
    memory_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Emit:
    """`emit NAME`: raise the event `NAME` for rules `on event NAME`."""

    event: str
    span: Span
    event_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Silence:
    """`silence alert by FIELD for D` or `for {FIELD}` (a duration known when the rule runs)."""

    field: str
    for_s: float | None
    for_field: str | None
    span: Span
    field_span: Span | None = None
    for_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class SilenceMatcher:
    """`LABEL = "template"` or `LABEL = {field}` in a `silence alert where`; `quoted` keeps how it was written."""

    label: str
    template: str
    quoted: bool
    span: Span
    label_span: Span | None = None
    value_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class SilenceWhere:
    """`silence alert where L1 = V1 [and L2 = V2 ...] for D`: every alert whose labels match, now and arriving
    later, is muted until the silence ends (an Alertmanager silence of equality matchers)."""

    matchers: tuple[SilenceMatcher, ...]
    for_s: float | None
    for_field: str | None
    span: Span
    for_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class EscalationStep:
    """`to TARGET after D` in an `escalate`: D counts from when the escalation was armed (the alert's firing)."""

    target: str
    after_s: float
    span: Span
    target_span: Span | None = None
    after_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Escalate:
    """`escalate to T1 after D1[, to T2 after D2 ...][, repeat every R] (unless|until) acknowledged`.

    `repeat_s` None: each step notifies once. Otherwise the last step's target is notified again every R."""

    steps: tuple[EscalationStep, ...]
    span: Span
    repeat_s: float | None = None
    repeat_span: Span | None = None


Action: TypeAlias = Notify | Reply | RunScript | Emit | Silence | SilenceWhere | Escalate


@quick_init
@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: a trigger, clauses that guard it, and the actions it takes, in the order written."""

    name: str | None
    trigger: Trigger
    clauses: tuple[Clause, ...]
    actions: tuple[Action, ...]
    span: Span
    name_span: Span | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class RuleFile:
    """The team declarations and rules of one file, in file order."""

    path: str
    rules: tuple[Rule, ...]
    teams: tuple[TeamDecl, ...] = ()
