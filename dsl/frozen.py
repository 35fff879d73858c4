"""Quicker construction of the frozen dataclasses the compiler makes by the hundred thousand (AST, spans, plan).

A frozen dataclass's generated `__init__` sets each field with `object.__setattr__(self, name, value)` (the
class's own `__setattr__` refuses), which costs about twice a plain assignment. With `slots=True` every field
is a slot whose descriptor can set it directly; `quick_init` swaps in an `__init__` that does only that, taking
the same parameters with the same defaults and calling `__post_init__` when the class has one. Everything else
is the dataclass's: the class stays frozen (assigning raises `FrozenInstanceError`), and its fields, `repr`,
equality, hashing and `dataclasses.replace` are unchanged. Building the AST and plan of 10,000 rules makes about
300,000 of these objects; this roughly halves what each costs.

Only for classes it can do exactly: slots, no `default_factory`, no keyword-only fields, no `InitVar`.
`tests/dsl/test_dsl_api.py` checks that every class it is applied to builds the same objects as the
dataclass's own `__init__` (kept in `DATACLASS_INIT`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T", bound=type)

# The dataclass's own __init__ of each class `quick_init` was applied to, for the tests to compare with.
DATACLASS_INIT: dict[type, Callable[..., None]] = {}


def quick_init(cls: T) -> T:
    """Give the frozen slots dataclass `cls` an `__init__` that sets its slots directly."""
    if "__slots__" not in cls.__dict__ or not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__}: quick_init needs a dataclass with slots=True")
    namespace: dict[str, Any] = {}
    params: list[str] = []
    body: list[str] = []
    for index, spec in enumerate(dataclasses.fields(cls)):
        if spec.default_factory is not dataclasses.MISSING or spec.kw_only:
            raise TypeError(f"{cls.__name__}.{spec.name}: quick_init takes plain defaults only")
        namespace[f"_set{index}"] = cls.__dict__[spec.name].__set__
        if not spec.init:  # set to its default, if it has one, as the dataclass's __init__ does
            if spec.default is not dataclasses.MISSING:
                namespace[f"_default{index}"] = spec.default
                body.append(f"    _set{index}(self, _default{index})")
            continue
        if spec.default is dataclasses.MISSING:
            params.append(spec.name)
        else:
            namespace[f"_default{index}"] = spec.default
            params.append(f"{spec.name}=_default{index}")
        body.append(f"    _set{index}(self, {spec.name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(source, namespace)  # noqa: S102 - the source is made above from the class's own field names
    init = namespace["__init__"]
    generated = vars(cls)["__init__"]
    if _parameters(init) != _parameters(generated):  # an InitVar, or anything else this does not know
        raise TypeError(f"{cls.__name__}: quick_init would change the parameters of __init__")
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = generated.__doc__
    DATACLASS_INIT[cls] = generated
    cls.__init__ = init  # type: ignore[misc]
    return cls


def _parameters(function: Callable[..., None]) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]
