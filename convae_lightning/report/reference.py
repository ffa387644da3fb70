"""Published values to show beside ours: a Markdown or CSV table keyed like the report's layout.

One row per cell of the comparison; the columns are the layout keys (every ``--rows``/``--cols``
key, e.g. ``config``, ``model.init_args.unpool``, ``units``), then value columns named like the
report's cell lines (``train/euclid``, ``test/euclid_balanced``, ``val/acc48_natural:best``,
``epochs``, ``wall_time``), and optionally ``note``. Values are kept as printed (``17†``,
``N/A``); empty cells and ``—`` mean "no published value". See ``docs/reports.md``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from convae_lightning.report.views import Field, canonical, format_value

__all__ = ["RefValue", "Reference", "read_reference"]

#: Columns carrying remarks, not values.
NOTE_COLUMNS: tuple[str, ...] = ("note", "notes", "source")
#: Cell texts meaning "no published value".
EMPTY_CELLS: tuple[str, ...] = ("", "—", "–", "-")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class RefValue:
    """A published value as printed, and its number when it has one."""

    text: str
    value: float | None


@dataclass
class Reference:
    """A reference table: label, key columns and, per key, the published values by field."""

    path: Path
    label: str
    keys: list[str]
    fields: list[Field]
    rows: dict[tuple[str, ...], dict[str, RefValue]] = field(default_factory=dict)

    def lookup(self, values: dict[str, str]) -> dict[str, RefValue]:
        """Published values of the cell whose layout keys have these canonical values."""
        return self.rows.get(tuple(values[k] for k in self.keys), {})

    def unmatched(self, seen: set[tuple[str, ...]]) -> list[str]:
        """Reference rows that no cell of ours matched, as ``key=value`` text."""
        return [
            ", ".join(
                f"{k}={format_value(json.loads(v))}" for k, v in zip(self.keys, row, strict=True)
            )
            for row in self.rows
            if row not in seen
        ]


def read_reference(path: str | os.PathLike, layout_keys: Sequence[str]) -> Reference:
    """Read a reference table (``.md`` or ``.csv``) for a layout with these keys.

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: naming the file, line and column of anything that does not fit: an unknown
            column, a layout key without a column, an empty key cell, a duplicated row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--reference: {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        lines = [(n, row) for n, row in enumerate(csv.reader(text.splitlines()), start=1) if row]
        label = path.stem
    elif suffix in (".md", ".markdown"):
        lines = _markdown_table(path, text)
        heading = next(
            (ln.lstrip("#").strip() for ln in text.splitlines() if ln.startswith("#")), ""
        )
        label = heading or path.stem
    else:
        raise ValueError(
            f"--reference: {str(path)!r}: expected a .md or .csv table, got {suffix!r}"
        )
    if not lines:
        raise ValueError(f"{path}: holds no table (a header row, then one row per cell)")
    (_, header), body = lines[0], lines[1:]
    header = [h.strip() for h in header]
    keys, fields = _columns(path, header, layout_keys)
    reference = Reference(path, label, keys, fields)
    for line_no, cells in body:
        if len(cells) != len(header):
            raise ValueError(f"{path}:{line_no}: {len(cells)} cells, the header has {len(header)}")
        row = dict(zip(header, (c.strip() for c in cells), strict=True))
        key = []
        for name in keys:
            if row[name] in EMPTY_CELLS:
                raise ValueError(f"{path}:{line_no}: column {name!r} is empty; every key is needed")
            key.append(canonical(yaml.safe_load(row[name])))
        if tuple(key) in reference.rows:
            raise ValueError(
                f"{path}:{line_no}: a second row for {dict(zip(keys, key, strict=True))}"
            )
        values = {}
        for item in fields:
            text = row[item.spec if item.spec in row else _column_of(header, item)]
            if text not in EMPTY_CELLS:
                number = _NUMBER.search(text)
                values[item.spec] = RefValue(text, float(number[0]) if number else None)
        reference.rows[tuple(key)] = values
    return reference


def _markdown_table(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """The first pipe table of a Markdown file: ``(line number, cells)``, separator dropped."""
    rows: list[tuple[int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in stripped.strip("|").split("|")]
        if len(rows) == 1 and all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
            continue  # the |---|---| line under the header
        rows.append((number, cells))
    return rows


def _columns(
    path: Path, header: list[str], layout_keys: Sequence[str]
) -> tuple[list[str], list[Field]]:
    keys, fields = [], []
    for name in header:
        if name in layout_keys:
            keys.append(name)
        elif name.lower() in NOTE_COLUMNS:
            continue
        else:
            try:
                fields.append(Field.parse(name))
            except ValueError:
                raise ValueError(
                    f"{path}: column {name!r} is neither a layout key (--rows/--cols: "
                    f"{list(layout_keys)}) nor a value column ('epochs', 'wall_time' or a metric "
                    "key such as 'test/euclid_balanced' or 'val/euclid_balanced:best')"
                ) from None
    missing = [k for k in layout_keys if k not in keys]
    if missing:
        raise ValueError(
            f"{path}: no column for layout key(s) {missing}; a reference table has one column per "
            f"--rows/--cols key (its columns: {header})"
        )
    return [k for k in layout_keys if k in keys], fields


def _column_of(header: list[str], item: Field) -> str:
    """The header spelling of a field (``test/euclid_balanced`` for ``...:final``)."""
    for name in header:
        try:
            if Field.parse(name) == item:
                return name
        except ValueError:
            continue
    raise KeyError(item.spec)
