"""Paired differences against a baseline condition, with a t-interval over the seeds.

``convae report ... --baseline model.init_args.encoder=random`` compares every cell with the
cell whose layout keys are the same except those given: each run is paired with the baseline's
run of the same seed (the seed fixes the data order and the resampled examples, so pairing
removes most of the seed-to-seed spread), and the difference's mean gets a 95% Student-t
interval over the pairs. An interval above zero means the condition beats the baseline in that
field, for a metric where higher is better."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yaml

from convae_lightning.report.table import Cell, ComparisonTable
from convae_lightning.report.views import Field, RunView, canonical

__all__ = ["PairedDifference", "paired_differences", "parse_baseline", "t_quantile_975"]

#: Two-sided 95% quantiles of Student's t, by degrees of freedom (1-30).
_T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """t such that P(|T| < t) = 0.95 with ``df`` degrees of freedom (a table to 30, then the
    Cornish-Fisher expansion, within 0.001 of the exact value)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T_975):
        return _T_975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class PairedDifference:
    """One cell's field minus its baseline's, paired by seed."""

    row: tuple[str, ...]
    col: tuple[str, ...]
    field: Field
    seeds: tuple[str, ...]
    differences: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.differences)

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% t-interval of the mean difference; ``None`` below two pairs."""
        if self.n < 2:
            return None
        half = t_quantile_975(self.n - 1) * statistics.stdev(self.differences) / math.sqrt(self.n)
        return self.mean - half, self.mean + half


def parse_baseline(items: Sequence[str], table: ComparisonTable) -> dict[str, str]:
    """``KEY=VALUE`` words to layout key -> canonical value (values read as YAML: ``null``,
    ``true``, ``4``, ``random``).

    Raises:
        ValueError: for a word without ``=`` or a key that is not a ``--rows``/``--cols`` key.
    """
    layout = table.row_keys + table.col_keys
    baseline = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--baseline: {item!r} is not KEY=VALUE")
        if key not in layout:
            raise ValueError(f"--baseline: {key!r} is not a layout key; --rows/--cols: {layout}")
        baseline[key] = canonical(yaml.safe_load(text))
    return baseline


def paired_differences(
    table: ComparisonTable, baseline: Mapping[str, str]
) -> list[PairedDifference]:
    """Every cell (but the baseline's own) against its baseline cell, field by field, over the
    seeds both have a finished run with a value for; cells without a baseline are left out."""
    out = []
    for (row, col), cell in table.cells.items():
        base_row = tuple(baseline.get(k, v) for k, v in zip(table.row_keys, row, strict=True))
        base_col = tuple(baseline.get(k, v) for k, v in zip(table.col_keys, col, strict=True))
        base = table.cells.get((base_row, base_col))
        if base is None or (base_row, base_col) == (row, col):
            continue
        for item in table.fields:
            if item.metric is None:
                continue  # epochs and wall time are not compared
            ours, theirs = _by_seed(cell, item), _by_seed(base, item)
            seeds = tuple(sorted((s for s in ours if s in theirs), key=_seed_order))
            if seeds:
                diffs = tuple(ours[s] - theirs[s] for s in seeds)
                out.append(PairedDifference(row, col, item, seeds, diffs))
    return out


def _by_seed(cell: Cell, item: Field) -> dict[str, float]:
    values = {}
    for view in cell.views:
        value = view.value(item) if view.entry.counted else None
        if value is not None and math.isfinite(value):
            values[_seed(view)] = value
    return values


def _seed(view: RunView) -> str:
    return canonical(view.key_value("seed"))


def _seed_order(seed: str) -> tuple[int, float | str]:
    try:
        return 0, float(seed)
    except ValueError:
        return 1, seed
