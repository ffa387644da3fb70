"""The comparison table: runs grouped into conditions, laid out by ``--rows`` and ``--cols`` keys.

A condition is the runs sharing every layout key's value (repeated seeds of one set-up); each
cell shows a few fields (best and final values of the chosen metrics, epochs, wall time) as
mean ± std over the condition's finished runs, with ``n``, and the published value beside it
when a reference table is given. Without ``--rows``, rows are the keys that vary: a study's
parameters (seed excluded), or the config keys that differ between the runs.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from convae_lightning.report.reference import Reference, RefValue, read_reference
from convae_lightning.report.sources import RunEntry, StudyInfo
from convae_lightning.report.views import (
    PSEUDO_KEYS,
    Field,
    RunView,
    canonical,
    format_value,
    run_views,
)
from convae_lightning.runs import STAGES, flatten_config, metric_key, parse_metric_key

__all__ = ["Cell", "ComparisonTable", "Stat", "build_table", "varying_keys"]

#: Keys holding seeds: repeats of a condition differ in them, so they never define one.
SEED_KEYS: tuple[str, ...] = ("seed_everything", "seed")
#: Config keys that differ between runs for bookkeeping (log folders, run names), not settings.
BOOKKEEPING_KEYS: tuple[str, ...] = (
    "trainer.logger",
    "trainer.default_root_dir",
    "ckpt_path",
    "checkpoint.dirpath",
    "last_checkpoint.dirpath",
    "run_dir",
)
#: Per-depth records of StackGrowth (``val_unit{k}/epochs``) that are counts, not metrics.
UNIT_RECORDS: tuple[str, ...] = ("epochs", "best_epoch")
#: Metric names tried, in order, when neither ``--metrics`` nor a study's objective names one.
PREFERRED_METRICS: tuple[str, ...] = ("euclid", "acc48", "loss")


@dataclass
class Stat:
    """A field's values over a condition: finished runs (``values``), and those still going."""

    values: list[float] = field(default_factory=list)
    pending: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1); ``None`` below two runs."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None


@dataclass
class Cell:
    """One condition at one column: its runs, their states and a :class:`Stat` per field."""

    views: list[RunView] = field(default_factory=list)
    stats: dict[str, Stat] = field(default_factory=dict)
    reference: dict[str, RefValue] = field(default_factory=dict)

    @property
    def statuses(self) -> Counter:
        return Counter(view.entry.status for view in self.views)


@dataclass
class ComparisonTable:
    """Rows x column groups of cells; keys' values kept canonical (see :func:`canonical`)."""

    row_keys: list[str]
    col_keys: list[str]
    fields: list[Field]
    rows: list[tuple[str, ...]]
    cols: list[tuple[str, ...]]
    cells: dict[tuple[tuple[str, ...], tuple[str, ...]], Cell]
    shown: dict[tuple[str, str], str]  # (key, canonical value) -> display text
    reference: Reference | None = None
    unmatched_reference: list[str] = field(default_factory=list)

    def key_label(self, key: str) -> str:
        """The shortest dotted suffix of ``key`` that no other layout key shares."""
        others = [k for k in self.row_keys + self.col_keys if k != key]
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            label = ".".join(parts[-n:])
            if not any(o == label or o.endswith("." + label) for o in others):
                return label
        return key

    def value_text(self, key: str, value: str) -> str:
        return self.shown.get((key, value), value)

    def col_label(self, col: tuple[str, ...]) -> str:
        return ", ".join(
            f"{self.key_label(k)} = {self.value_text(k, v)}"
            for k, v in zip(self.col_keys, col, strict=True)
        )

    def field_label(self, item: Field) -> str:
        return item.label(with_metric=len({f.metric for f in self.fields if f.metric}) > 1)

    @property
    def views(self) -> list[RunView]:
        return [view for cell in self.cells.values() for view in cell.views]


def varying_keys(entries: Sequence[RunEntry]) -> list[str]:
    """Config keys whose values differ between the runs (seeds and bookkeeping left out).

    When the runs come from different configs, keys that merely follow the config (each config
    name has one value) are left out too, and ``config`` itself is the first key.
    """
    flat = [flatten_config(e.record.config) for e in entries if e.record.config]
    keys = sorted({k for f in flat for k in f})
    varying = [
        k
        for k in keys
        if not _is_seed_or_bookkeeping(k) and len({canonical(f.get(k)) for f in flat}) > 1
    ]
    names = [RunView(e).key_value("config") for e in entries if e.record.config]
    if len(set(names)) <= 1:
        return varying
    follows = []
    for key in varying:
        by_name: dict[str, set[str]] = {}
        for name, values in zip(names, flat, strict=True):
            by_name.setdefault(name, set()).add(canonical(values.get(key)))
        if all(len(v) == 1 for v in by_name.values()):
            follows.append(key)
    return ["config"] + [k for k in varying if k not in follows]


def _is_seed_or_bookkeeping(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last in SEED_KEYS or any(key == b or key.startswith(b + ".") for b in BOOKKEEPING_KEYS)


def default_rows(study: StudyInfo | None, entries: Sequence[RunEntry]) -> list[str]:
    """A study's parameters (seed left out), else the config keys that vary."""
    if study is not None:
        keys: dict[str, None] = {}
        for trial in study.trials:
            for key in trial.params:
                if not _is_seed_or_bookkeeping(key):
                    keys[key] = None
        if keys:
            return list(keys)
    return varying_keys(entries)


def _check_keys(keys: Sequence[str], option: str, entries: Sequence[RunEntry]) -> None:
    known = set(PSEUDO_KEYS)
    for entry in entries:
        known.update(flatten_config(entry.record.config))
        if entry.trial is not None:
            known.update(entry.trial.params)
    for key in keys:
        prefix_of_known = any(k.startswith(key + ".") for k in known)
        if key not in known and not prefix_of_known:
            raise ValueError(
                f"{option}: {key!r} is not a key of these runs; keys that vary: "
                f"{varying_keys(entries)}; also {sorted(PSEUDO_KEYS)}, or any key of their "
                "config.yaml in dotted form (model.init_args.unpool)"
            )


def choose_metrics(study: StudyInfo | None, views: Sequence[RunView]) -> list[str]:
    """The study objective's metric, else the first of :data:`PREFERRED_METRICS` logged."""
    logged = _logged_names(views)
    objective = study.objective_metric if study is not None else None
    if objective:
        return [parse_metric_key(objective)[1]]
    for name in PREFERRED_METRICS:
        if name in logged:
            return [name]
    return sorted(logged)[:1]


def _logged_names(views: Sequence[RunView]) -> set[str]:
    """Names of the train/val/test metrics the runs logged (``euclid``, ``acc48``, ...)."""
    names = set()
    for view in views:
        record = view.entry.record
        tested = {k for row in record.evaluations.get("test", []) for k in row}
        for key in [*record.metric_keys, *tested]:
            try:
                stage, name, _ = parse_metric_key(key)
            except ValueError:
                continue
            if stage.split("_unit")[0] in STAGES and name not in UNIT_RECORDS:
                names.add(name)
    return names


def default_fields(
    metrics: Sequence[str], views: Sequence[RunView], published: Sequence[Field] = ()
) -> list[Field]:
    """Per metric: train final; val balanced/natural best and final; test balanced/natural; then
    epochs and wall time. Fields no run has a value for are left out, unless a reference table
    publishes them (``published``): the thesis's test errors show before ``convae test`` ran."""
    specs = []
    for name in metrics:
        specs.append(f"{metric_key('train', name)}:final")
        for view in ("balanced", "natural"):
            specs += [f"{metric_key('val', name, view)}:{agg}" for agg in ("best", "final")]
        specs += [f"{metric_key('test', name, view)}:final" for view in ("balanced", "natural")]
    fields = [Field.parse(s) for s in specs]
    fields += [f for f in published if f not in fields and f.key is not None]
    fields += [Field.parse("epochs"), Field.parse("wall_time")]
    return [f for f in fields if f in published or any(v.value(f) is not None for v in views)]


def build_table(
    study: StudyInfo | None,
    entries: Sequence[RunEntry],
    rows: Sequence[str] | None = None,
    cols: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    fields: Sequence[str] | None = None,
    reference: str | None = None,
) -> ComparisonTable:
    """Group the runs into conditions and compute every cell (see the module docs).

    Raises:
        ValueError: for a layout key no run has, a metric no run logged, a malformed field, or a
            reference table that does not fit the layout.
    """
    row_keys = list(rows) if rows is not None else default_rows(study, entries)
    col_keys = list(cols or [])
    for option, keys in (("--rows", row_keys), ("--cols", col_keys)):
        _check_keys(keys, option, entries)
    overlap = set(row_keys) & set(col_keys)
    if overlap:
        raise ValueError(f"--rows and --cols share {sorted(overlap)}; a key lays out one axis")
    views = run_views(entries, per_depth="units" in row_keys + col_keys)
    ref = read_reference(reference, row_keys + col_keys) if reference else None
    if fields:
        chosen = [Field.parse(spec) for spec in fields]
    else:
        logged = _logged_names(views)
        for name in metrics or []:
            if name not in logged:
                raise ValueError(f"--metrics: no run logged {name!r}; logged: {sorted(logged)}")
        published = ref.fields if ref is not None else []
        chosen = default_fields(metrics or choose_metrics(study, views), views, published)

    order = study.param_order() if study is not None else {}
    shown: dict[tuple[str, str], str] = {}
    sort_keys: dict[tuple[str, str], Any] = {}
    cells: dict[tuple[tuple[str, ...], tuple[str, ...]], Cell] = {}
    for view in views:
        values = {}
        for key in row_keys + col_keys:
            value = view.key_value(key)
            values[key] = canonical(value)
            shown[(key, values[key])] = format_value(value)
            sort_keys[(key, values[key])] = _sort_key(value, order.get(key))
        row = tuple(values[k] for k in row_keys)
        col = tuple(values[k] for k in col_keys)
        cells.setdefault((row, col), Cell()).views.append(view)

    for cell in cells.values():
        for item in chosen:
            stat = cell.stats.setdefault(item.spec, Stat())
            for view in cell.views:
                value = view.value(item)
                if value is None:
                    continue
                if view.entry.counted:
                    stat.values.append(value)
                elif view.entry.status == "running":
                    stat.pending.append(value)

    def ordered(axis_keys: list[str], index: int) -> list[tuple[str, ...]]:
        found = {key[index] for key in cells}
        return sorted(
            found, key=lambda t: [sort_keys[(k, v)] for k, v in zip(axis_keys, t, strict=True)]
        )

    table = ComparisonTable(
        row_keys, col_keys, chosen, ordered(row_keys, 0), ordered(col_keys, 1), cells, shown, ref
    )
    if ref is not None:
        seen = set()
        for (row, col), cell in cells.items():
            layout = dict(zip(row_keys + col_keys, row + col, strict=True))
            cell.reference = ref.lookup(layout)
            seen.add(tuple(layout[k] for k in ref.keys))
        table.unmatched_reference = ref.unmatched(seen)
    return table


def _sort_key(value: Any, choices: list[Any] | None) -> tuple:
    """Search-space order for a study's categorical choices, else None < bools < numbers < text."""
    if choices is not None and value in choices:
        return (0, choices.index(value), "")
    if value is None:
        return (1, 0, "")
    if isinstance(value, bool):
        return (2, int(value), "")
    if isinstance(value, (int, float)):
        return (3, value, "")
    return (4, 0, str(value))
