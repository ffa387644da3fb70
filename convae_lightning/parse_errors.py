"""jsonargparse's errors about a value, led by one line a user can act on.

A wrong ``--model.init_args.unpool nearest`` is reported by jsonargparse as 8 to 49 lines of
nested union-type text; :func:`explain` puts ``model.init_args.unpool: 'nearest' is not allowed;
allowed: 'switch', 'blind'`` first and keeps the details below it.
"""

from __future__ import annotations

import re

__all__ = ["explain", "not_allowed"]

_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS = re.compile(r"Problem with given class_path '([^']+)'")
_LITERAL = re.compile(r"Literal\[([^\]]*)\]")
_GIVEN = re.compile(r"^\s*Given value: (.*)$", re.MULTILINE)


def explain(message: str) -> str:
    """``message`` with a first line naming the key, the value and the allowed values, when the
    value failed a ``Literal`` (a fixed set of choices); otherwise ``message`` unchanged."""
    line = not_allowed(message)
    return message if line is None else f"{line}\n{message}"


def not_allowed(message: str) -> str | None:
    """``model.init_args.unpool: 'nearest' is not allowed; allowed: 'switch', 'blind'`` from
    jsonargparse's report of a value outside a ``Literal``; ``None`` for any other error."""
    lines = message.splitlines()
    keys: list[str] = []
    literal: str | None = None
    given: str | None = None
    for index, line in enumerate(lines):
        key = _KEY.search(line)
        if key is not None:
            keys.append(key.group(1))
            literal = given = None
            continue
        if _CLASS.search(line) and keys:
            keys.append("init_args")
            continue
        match = _LITERAL.search(line)
        if match is not None and literal is None and keys:
            literal = match.group(1)
            given_match = _GIVEN.search("\n".join(lines[index:]))
            given = given_match.group(1).strip() if given_match else None
    if literal is None or given is None or not keys:
        return None
    key = ".".join(k for k in _dedupe(keys))
    one_of = ", ".join(v.strip() for v in literal.split(","))
    also_list = "Sequence[typing.Literal" in message
    hint = " (or a list of them)" if also_list else ""
    return f"{key}: {given!r} is not allowed; allowed: {one_of}{hint}"


def _dedupe(keys: list[str]) -> list[str]:
    """``["model", "init_args", "unpool"]``; drop repeats of a key given in full."""
    out: list[str] = []
    for key in keys:
        if out and key.startswith(out[-1] + "."):
            out[-1] = key
        else:
            out.append(key)
    return out
