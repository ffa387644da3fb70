"""What a report says, independent of its format: cell texts, the runs list, study summary.

The HTML page, the Markdown file, the CSV and the W&B Report all render one :class:`Report`, so
they show the same numbers.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from convae_lightning.report.paired import PairedDifference
from convae_lightning.report.sources import RunEntry, StudyInfo
from convae_lightning.report.table import Cell, ComparisonTable, Stat
from convae_lightning.report.views import Field, RunView, format_value

__all__ = ["CellLine", "Picture", "Report", "cell_lines", "format_number", "format_seconds"]

#: Order in which run states are listed.
STATUS_ORDER: tuple[str, ...] = (
    "finished",
    "running",
    "pruned",
    "interrupted",
    "failed",
    "missing",
)


@dataclass(frozen=True)
class Picture:
    """A PNG of the report: file name under ``images/``, title and caption."""

    file: str
    title: str
    caption: str = ""


@dataclass(frozen=True)
class CellLine:
    """One line of a cell: field label, our value text, the published value text."""

    label: str
    value: str
    reference: str = ""


@dataclass
class Report:
    """Everything a report shows (see :func:`convae_lightning.report.build_report`)."""

    title: str
    out_dir: Path
    table: ComparisonTable
    entries: list[RunEntry]
    study: StudyInfo | None = None
    command: str = ""
    figures: list[Picture] = field(default_factory=list)
    reconstructions: list[Picture] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    paired: list[PairedDifference] = field(default_factory=list)

    def link(self, path: Path) -> str:
        """``path`` relative to the report folder (links stay valid when both move together)."""
        return os.path.relpath(path.resolve(), self.out_dir.resolve())

    def row_texts(self, row: tuple[str, ...]) -> list[str]:
        return [self.table.value_text(k, v) for k, v in zip(self.table.row_keys, row, strict=True)]

    def condition_label(self, view: RunView) -> str:
        """``unpool=switch, decoder_relu=true``: the run's layout values (depth left out: a run
        has one condition whatever depths it reached)."""
        keys = [k for k in self.table.row_keys + self.table.col_keys if k != "units"]
        parts = [f"{self.table.key_label(k)}={format_value(view.key_value(k))}" for k in keys]
        return ", ".join(parts) or "all runs"

    def paired_rows(self) -> list[dict[str, str]]:
        """The paired differences as the page's rows: the cell, the field, the mean difference
        to the baseline with its 95% interval, and the seeds paired."""
        table = self.table
        rows = []
        for diff in self.paired:
            keys = zip(table.row_keys + table.col_keys, diff.row + diff.col, strict=True)
            interval = diff.interval
            rows.append(
                {
                    "condition": ", ".join(
                        f"{table.key_label(k)}={table.value_text(k, v)}" for k, v in keys
                    ),
                    "field": table.field_label(diff.field),
                    "difference": format_number(diff.mean),
                    "95% interval": (
                        f"[{format_number(interval[0])}, {format_number(interval[1])}]"
                        if interval
                        else "—"
                    ),
                    "n": str(diff.n),
                    "seeds": " ".join(diff.seeds),
                }
            )
        return rows

    def study_summary(self) -> list[tuple[str, str]]:
        """(label, text) pairs describing the study; empty without one."""
        study = self.study
        if study is None:
            return []
        states = Counter(t.state for t in study.trials)
        summary = [
            ("study", study.name),
            ("storage", study.storage),
            ("objective", f"{study.objective_metric or 'value'} ({', '.join(study.directions)})"),
            ("trials", ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "none"),
        ]
        for companion in study.companions:
            counts = Counter(t.state for t in companion.trials)
            trials = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "none"
            summary.append(
                ("reported beside it", f"{companion.name} ({companion.storage}): {trials}")
            )
        complete = [t for t in study.trials if t.state == "COMPLETE" and t.value is not None]
        if complete:
            maximise = study.directions[0] == "maximize"
            best = (max if maximise else min)(complete, key=lambda t: t.value or 0.0)
            params = ", ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
            summary.append(
                ("best trial", f"#{best.number}: {format_number(best.value)} ({params})")
            )
        return summary


def format_number(value: float | None) -> str:
    """Three significant digits, thousands without exponent: ``0.731``, ``12.3``, ``1,234``."""
    if value is None or not math.isfinite(value):
        return "—" if value is None else str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _format(item: Field, value: float | None) -> str:
    if item.spec == "wall_time":
        return format_seconds(value)
    if item.spec == "epochs" and value is not None and float(value).is_integer():
        return f"{value:.0f}"
    return format_number(value)


def mean_std_text(mean: float, std: float) -> str:
    """``8.21 ± 0.60``: the standard deviation to two significant digits, the mean to match."""
    if std <= 0 or not math.isfinite(std):
        return f"{format_number(mean)} ± 0"
    decimals = max(0, 1 - math.floor(math.log10(std)))
    if decimals > 6 or abs(mean) >= 1000:
        return f"{format_number(mean)} ± {format_number(std)}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def stat_text(item: Field, stat: Stat, runs: int) -> str:
    """``1.23 ± 0.04``, ``1.23`` (one run), ``1.31 (running)``; ``(n=2)`` when some runs lack it."""
    if stat.n == 0:
        if stat.pending:
            return f"{_format(item, stat.pending[-1])} (running)"
        return "—"
    if stat.std is None or item.spec == "wall_time":
        text = _format(item, stat.mean)
    else:
        text = mean_std_text(stat.mean or 0.0, stat.std)
    if stat.n != runs:
        text += f" (n={stat.n})"
    return text


def cell_lines(table: ComparisonTable, cell: Cell) -> list[CellLine]:
    """The lines of a cell, one per field, with the reference value where there is one."""
    runs = cell.statuses.get("finished", 0)
    lines = []
    for item in table.fields:
        stat = cell.stats.get(item.spec, Stat())
        ref = cell.reference.get(item.spec)
        lines.append(
            CellLine(table.field_label(item), stat_text(item, stat, runs), ref.text if ref else "")
        )
    return lines


def cell_status(cell: Cell) -> str:
    """``3 runs``; ``2 runs, 1 running, 1 missing``; ``no runs``."""
    counts = cell.statuses
    finished = counts.get("finished", 0)
    parts = [f"{finished} run{'s' if finished != 1 else ''}"] if finished or not counts else []
    parts += [f"{counts[s]} {s}" for s in STATUS_ORDER[1:] if counts.get(s)]
    return ", ".join(parts) if counts else "no runs"
