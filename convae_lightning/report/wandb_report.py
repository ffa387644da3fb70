"""The same comparison as a W&B Report (``wandb-workspaces`` Reports API), over the study's runs.

The local report is the record; the W&B Report is built from it after it is written: the table
as Markdown, and W&B's own panels (learning curves, parallel coordinates, parameter importance,
the reconstruction images, a run comparer) over the runs of the study (``group = <study>``) or,
for plain runs, the runs' own W&B ids. Building it needs the network and ``wandb login``;
without them, or without the ``[wandb-reports]`` extra, :func:`publish` says so in one line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from convae_lightning.report.content import Report
from convae_lightning.report.render import render_markdown
from convae_lightning.report.views import PSEUDO_KEYS

__all__ = ["build_wandb_report", "parse_target", "publish", "wandb_run_ids"]

#: The image key ReconstructionLogger logs its spectrogram figures under.
RECONSTRUCTION_MEDIA_KEY = "reconstructions/spectrograms"
_TARGET = re.compile(r"^[\w.-]+/[\w.-]+$")
_RUN_FOLDER = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>\w+)$")


def parse_target(target: str) -> tuple[str, str]:
    """``ENTITY/PROJECT`` -> ``(entity, project)``.

    Raises:
        ValueError: for anything else.
    """
    if not _TARGET.match(target):
        raise ValueError(f"--wandb: expected ENTITY/PROJECT (e.g. my-team/convae), got {target!r}")
    entity, project = target.split("/")
    return entity, project


def wandb_run_ids(run_dir: Path) -> list[str]:
    """W&B run ids of a run folder (``wandb/offline-run-<date>_<time>-<id>``)."""
    return sorted(
        match["id"]
        for folder in (run_dir / "wandb").glob("*run-*")
        if folder.is_dir() and (match := _RUN_FOLDER.match(folder.name))
    )


def _logged_as(report: Report, key: str) -> str:
    """The spelling W&B has for ``key`` (Lightning logs ``train/euclid`` as ``..._epoch``)."""
    for view in report.table.views:
        resolved = view.resolve(key)
        if resolved is not None:
            return resolved
    return key


def _runset_filter(report: Report) -> str:
    if report.study is not None:
        return f"Group = '{report.study.name}'"
    ids = sorted({i for e in report.entries for i in wandb_run_ids(e.path)})
    return "ID in [" + ", ".join(f"'{i}'" for i in ids) + "]"


def build_wandb_report(report: Report, entity: str, project: str) -> Any:
    """A ``wandb_workspaces.reports.v2.Report`` mirroring ``report`` (not saved).

    Raises:
        ImportError: without ``wandb-workspaces`` (the ``[wandb-reports]`` extra).
    """
    import wandb_workspaces.reports.v2 as wr

    table = report.table
    # Pseudo-keys (units, config, seed) are the report's, not keys of the W&B runs' config.
    layout_keys = [k for k in table.row_keys + table.col_keys if k not in PSEUDO_KEYS]
    metric_keys = [f.key for f in table.fields if f.key is not None]
    curve_keys = [k for k in metric_keys if k.startswith(("train/", "val/"))]
    objective = (report.study.objective_metric if report.study else None) or next(
        (k for k in metric_keys if k.startswith("val/")), None
    )
    panels: list[Any] = [
        wr.LinePlot(
            title=key,
            x="epoch",
            y=[_logged_as(report, key)],
            groupby_aggfunc="mean",
            groupby_rangefunc="stddev",
        )
        for key in dict.fromkeys(curve_keys)
    ]
    if layout_keys and objective:
        columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in layout_keys]
        columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(objective)))
        panels.append(wr.ParallelCoordinatesPlot(columns=columns, title="conditions"))
        panels.append(wr.ParameterImportancePlot(with_respect_to=objective))
    panels.append(wr.MediaBrowser(media_keys=[RECONSTRUCTION_MEDIA_KEY], num_columns=2))
    panels.append(wr.RunComparer(diff_only="split"))
    runset = wr.Runset(
        entity=entity,
        project=project,
        name=report.study.name if report.study else "runs",
        filters=_runset_filter(report),
        groupby=[f"config.{k}" for k in layout_keys],
    )
    markdown = render_markdown(report)
    comparison = markdown.split("## Comparison", 1)[-1].split("\n## ", 1)[0].strip()
    description = "Built by convae report from the runs' own files" + (
        f" ({report.command})" if report.command else ""
    )
    return wr.Report(
        entity=entity,
        project=project,
        title=report.title[:128],
        description=description,
        width="fluid",
        blocks=[
            wr.H1(text=report.title[:128]),
            wr.MarkdownBlock(text=comparison),
            wr.H2(text="Runs"),
            wr.PanelGrid(runsets=[runset], panels=panels),
        ],
    )


def publish(report: Report, target: str) -> str:
    """Build and save the W&B Report; returns one line saying where it is, or why not."""
    entity, project = parse_target(target)
    where = f"the local report is {report.out_dir / 'index.html'}"
    mode = os.environ.get("WANDB_MODE", "")
    if mode in ("offline", "dryrun", "disabled"):
        return (
            f"W&B Report not built: WANDB_MODE={mode} (it needs the network and `wandb login`); "
            f"{where}"
        )
    if report.study is None and not any(wandb_run_ids(e.path) for e in report.entries):
        return f"W&B Report not built: none of these runs has a W&B run (wandb/ folder); {where}"
    try:
        built = build_wandb_report(report, entity, project)
    except ImportError:
        return (
            "W&B Report not built: wandb-workspaces is not installed "
            f"(pip install 'convae-lightning[wandb-reports]'); {where}"
        )
    try:
        built.save()
    except Exception as error:  # no login, no network, API refusal: the local report stands
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "not logged in" in reason or "API key" in reason:
            reason = "not logged in to W&B (run `wandb login`)"
        return f"W&B Report not built: {reason}; {where}"
    return f"W&B Report: {built.url}"
