"""Field names: which fields a rule may read (and their types), and reading one from an event's fields.

An event's fields are flat (`alert.service`), but some are maps (`alert.labels`) whose keys are named with one
more dot (`alert.labels.env`). `field_type` answers for the checks; `getter` builds, once, the function that
reads a field at match time: the flat key if present, else a key inside the nearest map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

MISSING = object()

Getter = Callable[[Mapping[str, object]], object]


def field_type(name: str, known: Mapping[str, str]) -> str | None:
    """The type of `name` among `known` (field -> type), or None when no such field exists.

    A key under a map field is text; any field under a kind that has `KIND.*` is of type any.
    """
    if name in known:
        return known[name]
    head, _, _ = name.rpartition(".")
    while head:
        kind = known.get(head)
        if kind == "map":
            return "text"
        if f"{head}.*" in known:
            return "any"
        head, _, _ = head.rpartition(".")
    return None


def getter(name: str) -> Getter:
    """A function reading `name` from an event's fields; it returns `MISSING` when the event lacks it."""
    splits = []
    head, _, tail = name.rpartition(".")
    keys: list[str] = []
    while head and "." in head:
        keys.insert(0, tail)
        splits.append((head, tuple(keys)))
        head, _, tail = head.rpartition(".")
    if not splits:

        def get_flat(fields: Mapping[str, object]) -> object:
            return fields.get(name, MISSING)

        return get_flat

    def get(fields: Mapping[str, object]) -> object:
        value = fields.get(name, MISSING)
        if value is not MISSING:
            return value
        for prefix, path in splits:
            found = fields.get(prefix, MISSING)
            if found is MISSING:
                continue
            for key in path:
                if not isinstance(found, Mapping):
                    return MISSING
                found = found.get(key, MISSING)
                if found is MISSING:
                    return MISSING
            return found
        return MISSING

    return get
