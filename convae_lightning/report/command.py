"""``convae report``: compare runs and sweeps in an offline HTML/Markdown/CSV report.

::

    convae report runs/unpooling                                   # a study folder
    convae report runs/weak_stack/version_* --rows model.init_args.unpool --cols units
    convae report --storage sqlite:///runs/unpooling/study.db --study-name unpooling \\
        --reference docs/reference/thesis_table4.md --wandb my-team/convae
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser

from convae_lightning.report.content import Picture, Report
from convae_lightning.report.figures import learning_curves_figure, save_png, study_figures
from convae_lightning.report.paired import paired_differences, parse_baseline
from convae_lightning.report.render import (
    render_csv,
    render_html,
    render_markdown,
    render_paired_csv,
    write_atomic,
)
from convae_lightning.report.sources import RunEntry, collect
from convae_lightning.report.table import build_table
from convae_lightning.report.views import RunView
from convae_lightning.runs import metric_key

__all__ = ["build_parser", "build_report", "main"]


def build_report(
    paths: Sequence[str] = (),
    storage: str | None = None,
    study_name: str | None = None,
    rows: Sequence[str] | None = None,
    cols: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    fields: Sequence[str] | None = None,
    reference: str | None = None,
    baseline: Sequence[str] | None = None,
    out: str | None = None,
    title: str | None = None,
    wandb: str | None = None,
    command: str = "",
) -> tuple[Report, str | None]:
    """Build the report folder (``index.html``, ``report.md``, ``table.csv``, ``images/``).

    Args:
        paths: Run folders, globs (``runs/weak_stack/version_*``), folders of runs, or a study
            folder ``runs/<study>/`` (its ``study.db`` or journal file is found there).
        storage: Optuna storage URL of a study (``sqlite:///runs/unpooling/study.db``,
            ``postgresql+psycopg2://...``) or a journal file.
        study_name: The study in ``storage`` (needed when it holds several).
        rows: Layout keys of the table's rows (config keys such as ``model.init_args.unpool``,
            or ``config``, ``units``, ``seed``); default: the keys that vary.
        cols: Layout keys of the column groups, e.g. ``units`` for per-depth results.
        metrics: Metric names shown in each cell (``euclid``, ``acc48``); default: the study's
            objective, else the first of euclid, acc48, loss that the runs logged.
        fields: Exact cell lines instead (``val/euclid_balanced:best``, ``test/euclid_balanced``,
            ``epochs``, ``wall_time``).
        reference: Markdown or CSV table of published values keyed like the layout.
        baseline: ``KEY=VALUE`` words naming a baseline cell by the layout keys that differ
            (``model.init_args.encoder=random``): every other cell's fields minus the
            baseline's, paired by seed, with a 95% t-interval (``paired.csv``).
        out: Output folder; default ``runs/<study>/report/`` or ``report/`` beside the runs.
        title: Page title; default from the study or the runs.
        wandb: ``ENTITY/PROJECT``: also build a W&B Report there (needs network and login).
        command: The command line, shown in the report.

    Returns:
        The report, and the W&B line (where the W&B Report is, or why it was not built).

    Raises:
        ValueError: for inputs that match nothing, unknown keys or metrics, a bad reference table
            or ``--wandb`` target; nothing is written then.
    """
    if wandb is not None:
        from convae_lightning.report.wandb_report import parse_target

        parse_target(wandb)
    study, entries = collect(paths, storage, study_name)
    table = build_table(study, entries, rows, cols, metrics, fields, reference)
    paired = paired_differences(table, parse_baseline(baseline, table)) if baseline else []
    out_dir = Path(out) if out else _default_out(study, entries)
    report = Report(
        title=title or _default_title(study, entries),
        out_dir=out_dir,
        table=table,
        entries=entries,
        study=study,
        command=command,
        paired=paired,
    )
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    report.figures = _figures(report, images, written)
    report.reconstructions = _reconstructions(report, images, written)
    for stale in images.glob("*.png"):
        if stale.name not in written:
            stale.unlink()  # a condition or figure that is gone since the last build
    report.notes = _notes(report)
    write_atomic(out_dir / "table.csv", render_csv(report))
    if baseline:
        write_atomic(out_dir / "paired.csv", render_paired_csv(report))
    write_atomic(out_dir / "report.md", render_markdown(report))
    write_atomic(out_dir / "index.html", render_html(report))
    message = None
    if wandb is not None:
        from convae_lightning.report.wandb_report import publish

        message = publish(report, wandb)
    return report, message


def _default_out(study, entries: Sequence[RunEntry]) -> Path:
    if study is not None:
        return (study.folder or Path("runs") / study.name) / "report"
    parents = {entry.path.parent.resolve() for entry in entries}
    return Path(os.path.commonpath([str(p) for p in parents])) / "report"


def _default_title(study, entries: Sequence[RunEntry]) -> str:
    if study is not None:
        return f"Study {study.name}"
    names = sorted({e.record.name for e in entries})
    return f"Runs of {', '.join(names)}" if len(names) <= 3 else f"{len(entries)} runs"


def _conditions(report: Report) -> dict[str, list[RunEntry]]:
    """Runs grouped by condition, in table order (a run at several depths counts once)."""
    table = report.table
    groups: dict[str, dict[Path, RunEntry]] = {}
    for row in table.rows:
        for col in table.cols:
            cell = table.cells.get((row, col))
            for view in cell.views if cell else []:
                groups.setdefault(report.condition_label(view), {})[view.entry.path] = view.entry
    return {label: list(runs.values()) for label, runs in groups.items()}


def _figures(report: Report, images: Path, written: set[str]) -> list[Picture]:
    table = report.table
    pictures = []
    names = {f.metric for f in table.fields if f.metric}
    for name in sorted(names):
        keys = [metric_key("train", name), metric_key("val", name, "balanced")]
        curves = {
            label: [{k: RunView(e).series(k) for k in keys} for e in runs]
            for label, runs in _conditions(report).items()
        }
        keys = [k for k in keys if any(run.get(k) for runs in curves.values() for run in runs)]
        if not keys:
            continue
        file = f"curves_{name}.png"
        save_png(learning_curves_figure(curves, keys), images / file)
        written.add(file)
        pictures.append(
            Picture(
                file,
                f"Learning curves: {name}",
                "one colour per condition, one line per run (seed)",
            )
        )
    if report.study is not None:
        target = report.study.objective_metric or "objective"
        for name, figure in study_figures(report.study.study, target).items():
            title = "Optuna: " + name.replace("_", " ")
            if isinstance(figure, str):
                report.notes.append(f"{title}: {figure}")
                continue
            save_png(figure, images / f"optuna_{name}.png")
            written.add(f"optuna_{name}.png")
            pictures.append(Picture(f"optuna_{name}.png", title))
    return pictures


def _reconstructions(report: Report, images: Path, written: set[str]) -> list[Picture]:
    """The latest reconstruction image of each condition (its first finished run that has one)."""
    pictures = []
    for i, (label, runs) in enumerate(_conditions(report).items()):
        ranked = sorted(runs, key=lambda e: (not e.counted, str(e.path)))
        for entry in ranked:
            latest = list(entry.record.iter_images())
            if latest:
                file = f"reconstruction_{i:02d}.png"
                shutil.copyfile(latest[-1], images / f".{file}.tmp")
                (images / f".{file}.tmp").replace(images / file)
                written.add(file)
                source = f"{report.link(latest[-1])}"
                pictures.append(Picture(file, label, source))
                break
    return pictures


def _notes(report: Report) -> list[str]:
    notes = list(report.notes)
    for entry in report.entries:
        problems = [p for p in entry.record.problems if p != "metrics.csv missing"]
        if problems:
            notes.append(f"{report.link(entry.path)}: {'; '.join(problems)}")
    if report.table.unmatched_reference:
        rows = "; ".join(report.table.unmatched_reference)
        notes.append(f"reference rows without runs: {rows}")
    return notes


# ------------------------------------------------------------------------------------ CLI
def build_parser() -> ArgumentParser:
    """``build_report``'s arguments as options; list options take several words (``--rows A B``)."""
    parser = ArgumentParser(
        prog="convae report",
        description="Compare runs and Optuna studies: index.html, report.md and table.csv.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file of these options.")
    parser.add_argument("paths", nargs="*", default=[], help=_arg_help("paths"))
    for name in ("rows", "cols", "metrics", "fields", "baseline"):
        parser.add_argument(f"--{name}", nargs="+", type=str, default=None, help=_arg_help(name))
    # `--study-name` as `convae sweep` spells it; jsonargparse's own spelling works too.
    help_text = _arg_help("study_name")
    parser.add_argument("--study-name", "--study_name", dest="study_name", help=help_text)
    parser.add_function_arguments(
        build_report,
        skip={"paths", "rows", "cols", "metrics", "fields", "baseline", "command", "study_name"},
    )
    return parser


def _arg_help(name: str) -> str:
    """The ``Args:`` text of ``build_report`` for one argument (one source for both helps)."""
    import docstring_parser

    params = {
        p.arg_name: p.description for p in docstring_parser.parse(build_report.__doc__ or "").params
    }
    return " ".join((params.get(name) or "").split())


def main(argv: Sequence[str] | None = None) -> None:
    """``convae report ...`` (also ``python -m convae_lightning.report``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    parsed = build_parser().parse_args(args)
    options = {k: v for k, v in parsed.as_dict().items() if k != "config"}
    command = shlex.join(["convae", "report", *args])
    try:
        report, message = build_report(command=command, **options)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    counts: dict[str, int] = {}
    for entry in report.entries:
        counts[entry.status] = counts.get(entry.status, 0) + 1
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none yet"
    print(
        f"report: {report.out_dir / 'index.html'} ({len(report.table.rows)} rows; runs: {states})"
    )
    if message:
        print(message)
