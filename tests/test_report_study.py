"""``convae report`` on a tiny finished study: real runs, a real SQLite study, real outputs.

The report is built the way a user builds it (the ``convae report`` console script, a
subprocess in the folder the sweep ran in) and read back as files: ``table.csv`` numbers are
checked against the runs' own ``metrics.csv`` (computed here independently), ``report.md`` for the
layout, and ``index.html`` in a real headless Chromium.
"""

from __future__ import annotations

import csv
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import matplotlib.image
import optuna
import pytest
from report_helpers import (
    FINISHED,
    OBJECTIVE,
    REFERENCE_MD,
    STACK_FIT_ARGS,
    STUDY,
    build_tiny_study,
    convae,
    fit_run,
    python,
    report_cli,
)
from sweep_helpers import TINY_OVERRIDES, write_spec

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium-headless-shell")
#: The cell lines of an autoencoder run that was fitted but not tested.
EXPECTED_FIELDS = [
    "train/euclid:final",
    "val/euclid_balanced:best",
    "val/euclid_balanced:final",
    "val/euclid_natural:best",
    "val/euclid_natural:final",
    "epochs",
    "wall_time",
]


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory, cli_cache) -> Path:
    return build_tiny_study(tmp_path_factory.getbasetemp() / "report_study", cli_cache)


@pytest.fixture(scope="module")
def built(study_folder, cli_cache) -> tuple[Path, subprocess.CompletedProcess]:
    """``convae report runs/<study> --reference reference.md`` run where the sweep ran."""
    root = study_folder.parents[1]
    (root / "reference.md").write_text(REFERENCE_MD)
    proc = report_cli([f"runs/{STUDY}", "--reference", "reference.md"], root, cli_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return study_folder / "report", proc


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def best_of(run_dir: Path, key: str) -> float:
    """The smallest value of ``key`` in a run's metrics.csv (read here, not by the report)."""
    values = [float(r[key]) for r in read_csv(run_dir / "metrics.csv") if r.get(key)]
    return min(values)


def comparison_rows(markdown: str) -> list[str]:
    section = markdown.split("## Comparison", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")]


def test_help_of_the_console_script_and_python_m(cli_cache, tmp_path):
    """``convae report --help`` lists the options; ``python -m`` is the same command."""
    console = report_cli(["--help"], tmp_path, cli_cache)
    assert console.returncode == 0, console.stderr[-3000:]
    assert "usage: convae report" in console.stdout
    for option in ("--storage", "--study-name", "--rows", "--cols", "--reference", "--wandb"):
        assert option in console.stdout
    module = python(["-m", "convae_lightning.report", "--help"], tmp_path, cli_cache)
    assert module.returncode == 0, module.stderr[-3000:]
    assert module.stdout == console.stdout


def test_report_folder_holds_the_three_files(built):
    out, proc = built
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "index.html",
        "report.md",
        "table.csv",
    ]
    assert f"runs/{STUDY}/report/index.html" in proc.stdout
    assert "4 finished, 1 missing, 1 running" in proc.stdout


def test_one_row_per_condition_with_mean_std_over_seeds(built, study_folder):
    out, _ = built
    rows = read_csv(out / "table.csv")
    assert list(rows[0])[:2] == ["model.init_args.unpool", "field"]
    assert [r["field"] for r in rows if r["model.init_args.unpool"] == "switch"] == EXPECTED_FIELDS
    best = {r["model.init_args.unpool"]: r for r in rows if r["field"] == f"{OBJECTIVE}:best"}
    assert sorted(best) == ["blind", "switch"]
    for unpool, row in best.items():
        trials = [n for n, (u, _) in enumerate(FINISHED) if u == unpool]
        values = [best_of(study_folder / f"trial_{n}", OBJECTIVE) for n in trials]
        assert float(row["mean"]) == pytest.approx(statistics.fmean(values))
        assert float(row["std"]) == pytest.approx(statistics.stdev(values))
        assert row["n"] == "2"
    assert best["switch"]["running"] == "1"  # trial 4: shown, not counted
    assert best["blind"]["running"] == "0"
    assert (best["switch"]["reference"], best["blind"]["reference"]) == ("0.73", "3.24")
    epochs = {r["model.init_args.unpool"]: r for r in rows if r["field"] == "epochs"}
    assert epochs["blind"]["reference"] == "19†"
    assert float(epochs["blind"]["reference_value"]) == 19
    assert float(epochs["switch"]["mean"]) == 3


def test_markdown_table_has_a_row_per_condition_and_references_beside_ours(built):
    out, _ = built
    header, *body = comparison_rows((out / "report.md").read_text())
    assert header == "| unpool | results |"
    assert [line.split(" | ")[0] for line in body] == ["| switch", "| blind"]  # search-space order
    switch, blind = body
    assert "*2 runs, 1 running*" in switch
    assert "*2 runs, 1 missing*" in blind
    match = re.search(r"val bal best: \*\*([\d.]+) ± ([\d.]+)\*\* \[0\.73\]", switch)
    assert match, switch
    labels = re.findall(r"<br>([a-z ]+):", switch)
    assert labels == ["train final", "val bal best", "val bal final", "val nat best",
                      "val nat final", "epochs", "wall time"]  # fmt: skip


def test_runs_table_shows_running_and_missing_runs_as_such(built):
    out, _ = built
    markdown = (out / "report.md").read_text()
    runs = markdown.split("## Runs", 1)[1].split("\n## ", 1)[0]
    lines = {re.search(r"trial_(\d)", ln)[1]: ln for ln in runs.splitlines() if "trial_" in ln}
    assert sorted(lines) == ["0", "1", "2", "3", "4", "5"]
    assert "| running |" in lines["4"]
    assert "| missing | metrics.csv missing |" in lines["5"]
    assert all("| finished |" in lines[n] for n in "0123")


def test_figures_are_pngs_of_the_study_and_each_condition(built):
    out, _ = built
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == [
        "curves_euclid.png",
        "optuna_optimization_history.png",
        "optuna_parallel_coordinate.png",
        "optuna_param_importances.png",
        "reconstruction_00.png",
        "reconstruction_01.png",
    ]
    for name in images:
        pixels = matplotlib.image.imread(out / "images" / name)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300, name
        assert pixels[..., :3].std() > 0.05, f"{name} is blank"
    markdown = (out / "report.md").read_text()
    assert all(f"](images/{name})" in markdown for name in images)


def test_rebuilding_is_idempotent(built, study_folder, cli_cache):
    out, _ = built
    files = ["index.html", "report.md", "table.csv"]
    before = {name: (out / name).read_bytes() for name in files}
    images = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    root = study_folder.parents[1]
    proc = report_cli([f"runs/{STUDY}", "--reference", "reference.md"], root, cli_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {name: (out / name).read_bytes() for name in files} == before
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == images


def test_storage_url_and_study_name_give_the_same_table(built, study_folder, cli_cache, tmp_path):
    out, _ = built
    root = study_folder.parents[1]
    args = ["--storage", f"sqlite:///runs/{STUDY}/study.db", "--study-name", STUDY,
            "--reference", "reference.md", "--out", str(tmp_path / "by_url")]  # fmt: skip
    proc = report_cli(args, root, cli_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = (tmp_path / "by_url" / "table.csv").read_text()
    runs_column = re.compile(r",[^,]*trial_[^,]*,")  # run links are relative to each folder
    assert runs_column.sub(",", ours) == runs_column.sub(",", (out / "table.csv").read_text())


def test_a_copied_study_reports_its_own_runs(built, study_folder, cli_cache, tmp_path):
    """A study copied without checkpoints (as docs/results/ keeps one) gives the same table from
    its own runs, while the original folder still exists beside it."""
    out, _ = built
    copy = tmp_path / "results" / STUDY
    shutil.copytree(
        study_folder, copy, ignore=shutil.ignore_patterns("checkpoints", "wandb", "report")
    )
    proc = report_cli([STUDY, "--reference", str(study_folder.parents[1] / "reference.md")],
                      copy.parent, cli_cache)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = read_csv(copy / "report" / "table.csv")
    original = read_csv(out / "table.csv")
    assert len(ours) == len(original)
    for mine, theirs in zip(ours, original, strict=True):
        assert mine["runs"] and all(run.startswith("../trial_") for run in mine["runs"].split())
        assert {k: v for k, v in mine.items() if k != "runs"} == {
            k: v for k, v in theirs.items() if k != "runs"
        }


def test_baseline_pairs_each_run_with_the_baselines_run_of_the_same_seed(
    study_folder, cli_cache, tmp_path
):
    """``--baseline``: blind minus switch, seed by seed, from the runs' own metrics.csv, with the
    95% t-interval of two pairs (t = 12.706 at one degree of freedom)."""
    root = study_folder.parents[1]
    args = [f"runs/{STUDY}", "--rows", "model.init_args.unpool", "--baseline",
            "model.init_args.unpool=switch", "--out", str(tmp_path)]  # fmt: skip
    proc = report_cli(args, root, cli_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["field"]: r for r in read_csv(tmp_path / "paired.csv")}
    assert {r["model.init_args.unpool"] for r in rows.values()} == {"blind"}
    assert "epochs" not in rows and "wall_time" not in rows
    row = rows[f"{OBJECTIVE}:best"]
    trial = {key: n for n, key in enumerate(FINISHED)}
    diffs = [
        best_of(study_folder / f"trial_{trial['blind', seed]}", OBJECTIVE)
        - best_of(study_folder / f"trial_{trial['switch', seed]}", OBJECTIVE)
        for seed in (0, 1)
    ]
    assert (row["n"], row["seeds"]) == ("2", "0 1")
    assert [float(d) for d in row["differences"].split()] == pytest.approx(diffs)
    half = 12.706 * statistics.stdev(diffs) / 2**0.5
    mean = statistics.fmean(diffs)
    assert float(row["mean_difference"]) == pytest.approx(mean)
    assert (float(row["low"]), float(row["high"])) == pytest.approx((mean - half, mean + half))
    markdown = (tmp_path / "report.md").read_text()
    assert "| unpool=blind | val bal best |" in markdown
    # the answer sits under the comparison, before the (long) list of runs
    assert markdown.index("## Comparison") < markdown.index("## Paired differences")
    assert markdown.index("## Paired differences") < markdown.index("## Runs")
    html = (tmp_path / "index.html").read_text()
    assert html.index("<h2>Paired differences</h2>") < html.index("<h2>Runs</h2>")


def test_a_baseline_key_outside_the_layout_is_refused(study_folder, cli_cache, tmp_path):
    root = study_folder.parents[1]
    args = [f"runs/{STUDY}", "--rows", "model.init_args.unpool", "--baseline", "seed=0",
            "--out", str(tmp_path / "out")]  # fmt: skip
    proc = report_cli(args, root, cli_cache)
    assert proc.returncode == 2
    assert "--baseline: 'seed' is not a layout key" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_two_study_folders_report_together(study_folder, cli_cache, tmp_path):
    """A study split over two specs (Table 5 and its literal reading) reads as one table; the
    first names the report and the summary names the other."""
    root = tmp_path / "checkout"
    shutil.copytree(
        study_folder.parents[1], root, ignore=shutil.ignore_patterns("checkpoints", "report")
    )
    shutil.copytree(root / "runs" / STUDY, root / "runs" / "other")
    args = [f"runs/{STUDY}", "runs/other", "--rows", "model.init_args.unpool"]
    proc = report_cli(args, root, cli_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(root / "runs" / STUDY / "report" / "table.csv")
    best = {r["model.init_args.unpool"]: r for r in rows if r["field"] == f"{OBJECTIVE}:best"}
    assert best["switch"]["n"] == best["blind"]["n"] == "4"
    links = best["blind"]["runs"].split()  # relative to runs/<study>/report/
    folders = [link.rsplit("/", 1)[0] for link in links]
    assert folders.count("..") == folders.count("../../other") == len(links) / 2
    markdown = (root / "runs" / STUDY / "report" / "report.md").read_text()
    assert f"- **reported beside it**: {STUDY} (sqlite:///runs/other/study.db)" in markdown
    assert str(root) not in markdown  # a committed report names no machine's paths


def test_run_globs_without_a_study(study_folder, cli_cache, tmp_path):
    """Plain run folders: rows are the keys that vary (the seed does not count)."""
    root = study_folder.parents[1]
    proc = report_cli([f"runs/{STUDY}/trial_*", "--out", str(tmp_path)], root, cli_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(tmp_path / "table.csv")
    assert {r["model.init_args.unpool"] for r in rows} == {"switch", "blind"}
    assert next(iter(rows[0])) == "model.init_args.unpool"
    markdown = (tmp_path / "report.md").read_text()
    assert "| missing | metrics.csv missing |" in markdown
    assert "Optuna" not in markdown


def test_a_study_made_by_convae_sweep(cli_cache, tmp_path):
    """The sweep runner's own layout and attributes: a row per condition, its trials' values."""
    csv_only = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}
    ]
    overrides = {**TINY_OVERRIDES, "trainer.max_epochs": 2, "trainer.logger": csv_only}
    spec = write_spec(tmp_path, name="tiny", overrides=overrides, seeds=[0, 1])
    swept = convae(["sweep", str(spec)], tmp_path, cli_cache, timeout=600)
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    proc = report_cli(["runs/tiny"], tmp_path, cli_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "runs/tiny/report/index.html (2 rows; runs: 4 finished)" in proc.stdout
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/runs/tiny/study.db")
    rows = read_csv(tmp_path / "runs/tiny/report/table.csv")
    best = {r["model.init_args.unpool"]: r for r in rows if r["field"] == f"{OBJECTIVE}:best"}
    assert sorted(best) == ["blind", "switch"]
    for unpool, row in best.items():
        values = [t.value for t in study.trials if t.params["model.init_args.unpool"] == unpool]
        assert len(values) == 2 and row["n"] == "2"
        assert float(row["mean"]) == pytest.approx(statistics.fmean(values))
    images = sorted(p.name for p in (tmp_path / "runs/tiny/report/images").iterdir())
    assert "optuna_optimization_history.png" in images


def test_units_columns_of_a_real_stacked_run_with_the_thesis_beside(cli_cache, tmp_path):
    """Table 4's layout: a column group per depth a stacked run reached; its test errors are
    ``convae test`` of each depth's checkpoint (``unit{k}.ckpt``, in ``test_metrics.csv``)."""
    run = tmp_path / "runs/weak_stack/version_0"
    fit = convae(STACK_FIT_ARGS, tmp_path, cli_cache)
    assert fit.returncode == 0, fit.stderr[-3000:]
    for depth in (1, 2):
        args = ["test", "--config", str(run / "config.yaml"), "--trainer.limit_test_batches", "2",
                "--ckpt_path", str(run / f"checkpoints/unit{depth}.ckpt")]  # fmt: skip
        tested = convae(args, tmp_path, cli_cache)
        assert tested.returncode == 0, tested.stderr[-3000:]
    (tmp_path / "table4.csv").write_text(
        "units,test/euclid_balanced,epochs\n1,0.69,50\n2,1.52,17†\n"
    )
    args = ["runs/weak_stack/version_0", "--cols", "units", "--reference", "table4.csv",
            "--fields", "val/euclid_balanced:best", "test/euclid_balanced", "epochs",
            "--out", "report"]  # fmt: skip
    proc = report_cli(args, tmp_path, cli_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = {(r["units"], r["field"]): r for r in read_csv(tmp_path / "report/table.csv")}
    metrics = read_csv(run / "metrics.csv")
    depth_of = {r["epoch"]: r["stack/active_units"][0] for r in metrics if r["stack/active_units"]}
    assert sorted(depth_of.values()) == ["1", "2"]  # one epoch at each depth
    for row in metrics:
        if row["val/euclid_balanced"]:
            cell = ours[(depth_of[row["epoch"]], "val/euclid_balanced:best")]
            assert float(cell["mean"]) == pytest.approx(float(row["val/euclid_balanced"]))
    for row in read_csv(run / "test_metrics.csv"):
        cell = ours[(row["checkpoint"][4], "test/euclid_balanced:final")]  # unit{k}.ckpt
        assert float(cell["mean"]) == pytest.approx(float(row["test/euclid_balanced"]))
    assert [ours[(u, "epochs")]["mean"] for u in "12"] == ["1.0", "1.0"]
    assert ours[("2", "epochs")]["reference"] == "17†"
    assert ours[("1", "test/euclid_balanced:final")]["reference"] == "0.69"
    header = comparison_rows((tmp_path / "report/report.md").read_text())[0]
    assert header == "| units = 1 | units = 2 |"


def test_units_columns_take_a_regular_runs_test_at_its_depth(cli_cache, tmp_path):
    """A regular autoencoder's ``convae test`` of its best checkpoint is its test value at its
    ``num_units`` (Table 4's regular rows), also in a copy without checkpoints (docs/results)."""
    run = tmp_path / "runs/regular"
    fit_run(tmp_path, cli_cache, run, [])
    best = next((run / "checkpoints").glob("epoch=*.ckpt"))
    args = ["test", "--config", str(run / "config.yaml"), "--trainer.limit_test_batches", "2",
            "--ckpt_path", str(best)]  # fmt: skip
    tested = convae(args, tmp_path, cli_cache)
    assert tested.returncode == 0, tested.stderr[-3000:]
    (expected,) = [float(r["test/euclid_balanced"]) for r in read_csv(run / "test_metrics.csv")]
    shutil.copytree(run, tmp_path / "copy/regular", ignore=shutil.ignore_patterns("checkpoints"))
    for folder in ("runs/regular", "copy/regular"):
        out = tmp_path / "report" / folder
        args = [folder, "--cols", "units", "--fields", "test/euclid_balanced", "--out", str(out)]
        proc = report_cli(args, tmp_path, cli_cache)
        assert proc.returncode == 0, proc.stderr[-3000:]
        ours = {(r["units"], r["field"]): r for r in read_csv(out / "table.csv")}
        assert float(ours[("1", "test/euclid_balanced:final")]["mean"]) == pytest.approx(expected)


# ------------------------------------------------------------------------ headless browser
CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.broken = images.filter(i => !i.complete || i.naturalWidth === 0).length;
  document.body.dataset.height = Math.round(document.body.getBoundingClientRect().height);
  document.body.dataset.rows = document.querySelectorAll("table.comparison tbody tr").length;
});
</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--virtual-time-budget=10000", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="chromium-headless-shell is not installed")
def test_html_renders_table_and_every_image_in_a_headless_browser(built, tmp_path):
    out, _ = built
    page = (out / "index.html").read_text()
    assert 'src="images/' not in page and page.count('src="data:image/png;base64,') == 6
    # The report itself stays script-free: the check runs in a copy, away from images/.
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    dom = chromium("--window-size=1400,1000", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body ([^>]*)>", dom.stdout)[1]
    data = dict(re.findall(r'data-(\w+)="(\d+)"', body))
    assert data["images"] == "6"
    assert data["broken"] == "0"
    assert data["rows"] == "2"
    assert int(data["height"]) > 1500  # tables, two figure grids: a long page, not an empty one
    shot = tmp_path / "shot.png"
    result = chromium(
        "--window-size=1400,3000", f"--screenshot={shot}", (out / "index.html").as_uri()
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (3000, 1400)
    not_white = (pixels[..., :3] < 0.9).any(axis=2)
    assert not_white[:1500].mean() > 0.05  # text, table and images drawn in the top half
