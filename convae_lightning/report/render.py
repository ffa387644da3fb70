"""Write a :class:`~convae_lightning.report.content.Report` as ``report.md``, ``table.csv`` and a
self-contained ``index.html`` (images embedded as data URIs: it opens from disk, no server).

Every file is written atomically and holds nothing that changes between two builds of the same
runs (no timestamps), so rebuilding a report is idempotent.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from pathlib import Path

from convae_lightning.report.content import (
    STATUS_ORDER,
    Report,
    cell_lines,
    cell_status,
    format_number,
    format_seconds,
)
from convae_lightning.report.table import Cell
from convae_lightning.report.views import RunView, format_value

__all__ = ["render_csv", "render_html", "render_markdown", "write_atomic"]

#: What the comparison says before any run has a value.
NO_RUNS = "No runs to compare yet."


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write a file so that readers see the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path


def _cells(report: Report):
    table = report.table
    for row in table.rows:
        yield row, [(col, table.cells.get((row, col))) for col in table.cols]


def _objective_key(report: Report) -> str | None:
    return report.study.objective_metric if report.study is not None else None


def _run_rows(report: Report) -> list[dict[str, str]]:
    """One dict per run: what the runs table of every format shows, by state, then in the
    inputs' order (trial numbers, ``version_N``, numbers compared as numbers)."""
    objective = _objective_key(report)
    position = {entry.path: i for i, entry in enumerate(report.entries)}
    views: dict[Path, RunView] = {}
    for view in report.table.views:
        views.setdefault(view.entry.path, view)  # per-depth views of one run: listed once
    rows = []
    for path in sorted(views, key=lambda p: position.get(p, len(position))):
        view = views[path]
        entry = view.entry
        status, detail = entry.status_detail
        best = ""
        if objective:
            mode = "max" if report.study and report.study.directions[0] == "maximize" else "min"
            best = format_number(entry.record.best(objective, mode))
        rows.append(
            {
                "run": report.link(entry.path),
                "trial": "" if entry.trial is None else str(entry.trial.number),
                "condition": report.condition_label(view),
                "seed": "" if entry.seed is None else str(entry.seed),
                "status": status,
                "detail": detail,
                "epochs": str(entry.record.epochs_trained) if entry.record.rows else "—",
                "wall time": format_seconds(entry.wall_time_s),
                "objective best": best,
            }
        )
    order = {s: i for i, s in enumerate(STATUS_ORDER)}
    return sorted(rows, key=lambda r: order.get(r["status"], 99))  # stable: inputs' order kept


# ------------------------------------------------------------------------------ Markdown
def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_cell(report: Report, cell: Cell | None) -> str:
    if cell is None:
        return "no runs"
    lines = [f"*{cell_status(cell)}*"]
    for line in cell_lines(report.table, cell):
        ref = f" [{line.reference}]" if line.reference else ""
        lines.append(f"{line.label}: **{line.value}**{ref}")
    return "<br>".join(_md(x) for x in lines)


def render_markdown(report: Report) -> str:
    """``report.md``: the same tables as the HTML page, images linked from ``images/``."""
    table = report.table
    out = [f"# {report.title}", ""]
    if report.command:
        out += ["```", report.command, "```", ""]
    summary = report.study_summary()
    if summary:
        out += [f"- **{k}**: {_md(v)}" for k, v in summary] + [""]
    out += ["## Comparison", ""]
    if not table.rows:
        out += [NO_RUNS]
    else:
        out += [_legend(report), ""]
        header = [table.key_label(k) for k in table.row_keys] + [
            table.col_label(c) or "results" for c in table.cols
        ]
        out += ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
        for row, cells in _cells(report):
            texts = report.row_texts(row) + [_md_cell(report, cell) for _, cell in cells]
            keys = [_md(t) for t in texts[: len(row)]]
            out.append("| " + " | ".join(keys + texts[len(row) :]) + " |")
    paired = report.paired_rows()
    if paired:
        out += ["", "## Paired differences", "", _paired_legend(report), ""]
        out += ["| " + " | ".join(paired[0]) + " |", "|" + "---|" * len(paired[0])]
        out += ["| " + " | ".join(_md(v) for v in line.values()) + " |" for line in paired]
    runs = _run_rows(report)
    if runs:
        out += ["", "## Runs", ""]
        columns = [c for c in runs[0] if any(r[c] for r in runs)]
        out += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for run in runs:
            texts = [
                f"[{run['run']}]({run['run']})" if c == "run" else _md(run[c]) for c in columns
            ]
            out.append("| " + " | ".join(texts) + " |")
    for title, pictures in (
        ("Figures", report.figures),
        ("Reconstructions", report.reconstructions),
    ):
        if pictures:
            out += ["", f"## {title}", ""]
            for picture in pictures:
                out += [
                    f"### {picture.title}",
                    "",
                    f"![{picture.title}](images/{picture.file})",
                    "",
                ]
                if picture.caption:
                    out += [picture.caption, ""]
    if report.notes:
        out += ["", "## Notes", ""] + [f"- {_md(n)}" for n in report.notes]
    return "\n".join(out).rstrip() + "\n"


def _legend(report: Report) -> str:
    table = report.table
    text = (
        "Each cell: mean ± standard deviation over the condition's finished runs (seeds); "
        "`(n=k)` where fewer runs logged a value; running runs are shown but not counted."
    )
    if table.reference is not None:
        text += f" Values in brackets: {table.reference.label} (`{table.reference.path.name}`)."
    return text


def _paired_legend(report: Report) -> str:
    return (
        "Each condition's value minus its baseline's (the cell with the `--baseline` keys), run "
        "by run of the same seed: mean difference and 95% Student-t interval over the pairs."
    )


# ----------------------------------------------------------------------------------- CSV
def render_paired_csv(report: Report) -> str:
    """``paired.csv``: one line per condition and field, its layout keys in full, the mean
    difference to the baseline, the interval's bounds, the pairs and their differences."""
    table = report.table
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ["field", "mean_difference", "low", "high", "n", "seeds", "differences"]
    writer.writerow([*table.row_keys, *table.col_keys, *columns])
    for diff in report.paired:
        low, high = diff.interval or (None, None)
        writer.writerow(
            [
                *[_csv_key(v) for v in diff.row + diff.col],
                diff.field.spec,
                _csv_number(diff.mean),
                _csv_number(low),
                _csv_number(high),
                diff.n,
                " ".join(diff.seeds),
                " ".join(repr(d) for d in diff.differences),
            ]
        )
    return buffer.getvalue()


def render_csv(report: Report) -> str:
    """``table.csv``: one line per row, column group and field (tidy, for pandas)."""
    table = report.table
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            *table.row_keys,
            *table.col_keys,
            "field",
            "mean",
            "std",
            "n",
            "running",
            "runs",
            "reference",
            "reference_value",
        ]
    )
    for row, cells in _cells(report):
        for col, cell in cells:
            if cell is None:
                continue
            runs = " ".join(report.link(v.path) for v in cell.views)
            for item in table.fields:
                stat = cell.stats.get(item.spec)
                ref = cell.reference.get(item.spec)
                writer.writerow(
                    [
                        *[_csv_key(v) for v in row],
                        *[_csv_key(v) for v in col],
                        item.spec,
                        _csv_number(stat.mean if stat else None),
                        _csv_number(stat.std if stat else None),
                        stat.n if stat else 0,
                        len(stat.pending) if stat else 0,
                        runs,
                        ref.text if ref else "",
                        _csv_number(ref.value if ref else None),
                    ]
                )
    return buffer.getvalue()


def _csv_key(value: str) -> str:
    """A layout key's value in full (the page shortens long labels; a join key must not be)."""
    return format_value(json.loads(value), width=2**31)


def _csv_number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


# ---------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1400px;
padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.3em .5em;vertical-align:top;text-align:left}
th{background:#f0f0f0}
td.cell div{white-space:nowrap}
.k{color:#666}.v{font-weight:600}.ref{color:#8a4b00}.runs{color:#666;font-style:italic}
.status{padding:0 .4em;border-radius:.3em;font-size:.9em}
.finished{background:#dff3df}.running{background:#dde9fb}.pruned{background:#eee}
.failed,.missing{background:#fbdcdc}.interrupted{background:#fbefd0}
figure{margin:0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:1em}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _html_cell(report: Report, cell: Cell | None) -> str:
    if cell is None:
        return '<td class="cell"><div class="runs">no runs</div></td>'
    parts = [f'<div class="runs">{_e(cell_status(cell))}</div>']
    for line in cell_lines(report.table, cell):
        ref = f' <span class="ref">[{_e(line.reference)}]</span>' if line.reference else ""
        parts.append(
            f'<div><span class="k">{_e(line.label)}</span> '
            f'<span class="v">{_e(line.value)}</span>{ref}</div>'
        )
    return f'<td class="cell">{"".join(parts)}</td>'


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_comparison(report: Report) -> list[str]:
    table = report.table
    out = [f"<p>{_e(_legend(report)).replace('`', '')}</p>"]
    out.append('<table class="comparison"><thead><tr>')
    out += [f"<th>{_e(table.key_label(k))}</th>" for k in table.row_keys]
    out += [f"<th>{_e(table.col_label(c) or 'results')}</th>" for c in table.cols]
    out.append("</tr></thead><tbody>")
    for row, cells in _cells(report):
        out.append("<tr>" + "".join(f"<th>{_e(t)}</th>" for t in report.row_texts(row)))
        out += [_html_cell(report, cell) for _, cell in cells]
        out.append("</tr>")
    out.append("</tbody></table>")
    return out


def _html_runs(report: Report) -> list[str]:
    runs = _run_rows(report)
    if not runs:
        return []
    columns = [c for c in runs[0] if any(r[c] for r in runs)]
    out = ["<h2>Runs</h2>", '<table class="runs-table"><thead><tr>']
    out += [f"<th>{_e(c)}</th>" for c in columns] + ["</tr></thead><tbody>"]
    for run in runs:
        cells = []
        for c in columns:
            if c == "status":
                cells.append(f'<td><span class="status {_e(run[c])}">{_e(run[c])}</span></td>')
            else:
                cells.append(f"<td>{_e(run[c])}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return out


def render_html(report: Report) -> str:
    """``index.html``: one file, every image embedded."""
    table = report.table
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(report.title)}</h1>",
    ]
    if report.command:
        out.append(f"<pre>{_e(report.command)}</pre>")
    summary = report.study_summary()
    if summary:
        out.append(
            "<table>"
            + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in summary)
            + "</table>"
        )
    out.append("<h2>Comparison</h2>")
    if not table.rows:
        out.append(f"<p>{_e(NO_RUNS)}</p>")
    else:
        out += _html_comparison(report)
    paired = report.paired_rows()
    if paired:
        out += ["<h2>Paired differences</h2>", f"<p>{_e(_paired_legend(report))}</p>", "<table>"]
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in paired[0]) + "</tr>")
        for line in paired:
            out.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in line.values()) + "</tr>")
        out.append("</table>")
    out += _html_runs(report)
    images = report.out_dir / "images"
    for title, pictures in (
        ("Figures", report.figures),
        ("Reconstructions", report.reconstructions),
    ):
        if not pictures:
            continue
        out += [f"<h2>{title}</h2>", '<div class="grid">']
        for picture in pictures:
            caption = _e(picture.title) + (f"<br>{_e(picture.caption)}" if picture.caption else "")
            out.append(
                f'<figure><img alt="{_e(picture.title)}" '
                f'src="{_data_uri(images / picture.file)}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        out.append("</div>")
    if report.notes:
        out += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{_e(n)}</li>" for n in report.notes] + ["</ul>"]
    out.append("</body></html>")
    return "\n".join(out) + "\n"
