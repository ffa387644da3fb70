"""The comparison table from run folders on disk: layout keys, per-depth cells, statistics,
reference tables, and the errors bad input gets.

Run folders here are written file by file in the run contract's format (``config.yaml``,
``metrics.csv`` as Lightning's CSVLogger writes it, ``status.json`` through ``write_status``), so
each case (a stacked run's depths, a run still going) is exact and takes milliseconds; the
end-to-end tests in ``test_report_study.py`` use real ``convae fit`` runs.
"""

from __future__ import annotations

import csv
import re
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from convae_lightning.report.command import build_report
from convae_lightning.report.content import mean_std_text
from convae_lightning.report.reference import read_reference
from convae_lightning.report.sources import collect
from convae_lightning.report.table import build_table, varying_keys
from convae_lightning.report.views import Field
from convae_lightning.runs import write_status

REPO = Path(__file__).resolve().parents[1]
TABLE4 = ("config", "model.init_args.unpool", "model.init_args.decoder_relu", "units")


def write_run(
    run_dir: Path,
    model: dict,
    rows: list[dict],
    seed: int = 0,
    class_path: str = "convae_lightning.models.ConvAutoencoder",
) -> Path:
    """A run folder: config.yaml and metrics.csv (one column per key, blanks elsewhere)."""
    run_dir.mkdir(parents=True)
    config = {
        "seed_everything": seed,
        "model": {"class_path": class_path, "init_args": model},
        "trainer": {"logger": [{"init_args": {"version": run_dir.name}}]},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    keys = sorted({k for row in rows for k in row} - {"epoch", "step"})
    with (run_dir / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["epoch", "step", *keys])
        writer.writeheader()
        writer.writerows(rows)
    return run_dir


def epochs_of(values: list[float], key: str = "val/euclid_balanced", **extra) -> list[dict]:
    rows = []
    for epoch, value in enumerate(values):
        rows.append({"epoch": epoch, "step": epoch, key: value})
        rows.append({"epoch": epoch, "step": epoch, "train/euclid_epoch": value + 1})
        rows.extend({"epoch": epoch, "step": epoch, k: v[epoch]} for k, v in extra.items())
    return rows


def cell_value(table, row: tuple, col: tuple, spec: str):
    return table.cells[(row, col)].stats[spec]


# ----------------------------------------------------------------------------- fields
@pytest.mark.parametrize(
    ("spec", "key", "agg", "label"),
    [
        ("val/euclid_balanced:best", "val/euclid_balanced", "best", "val bal best"),
        ("test/acc48_natural", "test/acc48_natural", "final", "test nat"),
        ("train/euclid", "train/euclid", "final", "train final"),
        (
            "val_unit2/euclid_balanced:final",
            "val_unit2/euclid_balanced",
            "final",
            "val unit 2 bal final",
        ),
        ("epochs", None, None, "epochs"),
        ("wall_time", None, None, "wall time"),
    ],
)
def test_fields_parse_and_label(spec, key, agg, label):
    field = Field.parse(spec)
    assert (field.key, field.agg, field.label()) == (key, agg, label)


@pytest.mark.parametrize("spec", ["euclid", "val/euclid:worst", "epoch", "/x"])
def test_bad_field_names_the_allowed_forms(spec):
    with pytest.raises(ValueError, match=rf"field '{spec}'.*'epochs', 'wall_time'"):
        Field.parse(spec)


def test_accuracy_is_best_at_its_maximum(tmp_path):
    run = write_run(
        tmp_path / "runs/forward/version_0", {}, epochs_of([0.2, 0.5, 0.4], "val/acc48_balanced")
    )
    table = build_table(
        *collect([run]), rows=[], fields=["val/acc48_balanced:best", "val/acc48_balanced"]
    )
    stats = table.cells[((), ())].stats
    assert (stats["val/acc48_balanced:best"].mean, stats["val/acc48_balanced:final"].mean) == (
        0.5,
        0.4,
    )


# ------------------------------------------------------------------------- statistics
def test_cells_give_mean_std_and_n_over_seeds_and_leave_running_runs_out(tmp_path):
    values = {0: [5.0, 4.0, 4.5], 1: [6.0, 3.0, 3.5], 2: [9.0, 8.5, 8.0]}
    runs = [
        write_run(
            tmp_path / f"runs/regular_ae/version_{s}", {"unpool": "switch"}, epochs_of(v), seed=s
        )
        for s, v in values.items()
    ]
    write_status(runs[2], "running", pid=None)
    table = build_table(
        *collect([tmp_path / "runs/regular_ae"]), fields=["val/euclid_balanced:best"]
    )
    assert table.row_keys == []  # only the seed varies: one condition
    stat = cell_value(table, (), (), "val/euclid_balanced:best")
    assert stat.values == [4.0, 3.0] and stat.pending == [8.0]
    assert (stat.n, stat.mean) == (2, 3.5)
    assert stat.std == pytest.approx(statistics.stdev([4.0, 3.0]))


@pytest.mark.parametrize(
    ("mean", "std", "text"),
    [
        (8.2145, 0.6041, "8.21 ± 0.60"),
        (23.0, 4.69, "23.0 ± 4.7"),
        (0.7312, 0.0123, "0.731 ± 0.012"),
        (1234.5, 56.0, "1,234 ± 56"),
        (3.0, 0.0, "3 ± 0"),
    ],
)
def test_mean_and_std_are_rounded_together(mean, std, text):
    assert mean_std_text(mean, std) == text


# ---------------------------------------------------------------------------- layouts
def test_default_rows_are_the_keys_that_vary_beyond_the_config_name(tmp_path):
    for i, (unpool, seed) in enumerate([("switch", 0), ("switch", 1), ("blind", 0)]):
        write_run(
            tmp_path / f"runs/regular_ae/version_{i}",
            {"unpool": unpool, "num_units": 4},
            epochs_of([3.0]),
            seed=seed,
        )
    write_run(
        tmp_path / "runs/weak_stack/version_0",
        {"unpool": "blind", "num_units": 4, "mode": "weak"},
        epochs_of([3.0]),
        class_path="convae_lightning.models.StackedAutoencoder",
    )
    _, regular = collect([tmp_path / "runs/regular_ae"])
    assert varying_keys(regular) == ["model.init_args.unpool"]  # not seeds, not logger versions
    _, both = collect([tmp_path / "runs/*"])
    # class_path and mode follow the config; unpool varies within regular_ae
    assert varying_keys(both) == ["config", "model.init_args.unpool"]
    table = build_table(None, both, fields=["epochs"])
    assert table.rows == [
        ('"regular_ae"', '"blind"'),
        ('"regular_ae"', '"switch"'),
        ('"weak_stack"', '"blind"'),
    ]


def stacked_runs(root: Path) -> list[Path]:
    """Two stacked runs and 1- and 2-unit regular runs.

    ``weak_stack/version_0`` has only StackGrowth's per-depth records (logged without an epoch,
    as StackGrowth writes them); ``version_1`` logs its depth every epoch, as the model does.
    """
    kwargs = {"class_path": "convae_lightning.models.StackedAutoencoder"}
    unit_records = [
        *epochs_of([5.0, 4.0, 3.0, 2.5]),
        {"step": 2, "val_unit1/euclid_balanced": 4.0, "val_unit1/epochs": 2},
        {"step": 4, "val_unit2/euclid_balanced": 2.5, "val_unit2/epochs": 2},
    ]
    depths = epochs_of([6.0, 5.0, 5.5, 4.0, 4.5], **{"stack/active_units": [1, 1, 1, 2, 2]})
    stack = {"num_units": 2, "mode": "weak"}
    return [
        write_run(root / "runs/weak_stack/version_0", stack, unit_records, **kwargs),
        write_run(root / "runs/weak_stack/version_1", stack, depths, seed=1, **kwargs),
        write_run(root / "runs/regular_ae/version_0", {"num_units": 1}, epochs_of([2.0, 1.0])),
        write_run(root / "runs/regular_ae/version_1", {"num_units": 2}, epochs_of([3.0, 2.0, 1.5])),
    ]


def test_units_column_reads_each_depth_of_stacked_runs(tmp_path):
    runs = stacked_runs(tmp_path)
    fields = ["val/euclid_balanced:best", "val/euclid_balanced:final", "epochs"]
    table = build_table(None, collect(runs)[1], rows=["config"], cols=["units"], fields=fields)
    assert table.cols == [("1",), ("2",)]
    weak = '"weak_stack"'
    one, two = (table.cells[((weak,), (d,))].stats for d in ("1", "2"))
    # version_0: the depth's best-epoch record; version_1: its epochs at that depth
    assert one["val/euclid_balanced:best"].values == [4.0, 5.0]
    assert one["val/euclid_balanced:final"].values == [4.0, 5.5]
    assert one["epochs"].values == [2.0, 3.0]
    assert two["val/euclid_balanced:best"].values == [2.5, 4.0]
    assert two["val/euclid_balanced:final"].values == [2.5, 4.5]
    assert two["epochs"].values == [2.0, 2.0]
    regular = '"regular_ae"'
    assert table.cells[((regular,), ("1",))].stats["val/euclid_balanced:best"].values == [1.0]
    assert table.cells[((regular,), ("2",))].stats["epochs"].values == [3.0]
    assert table.col_label(("2",)) == "units = 2"


# --------------------------------------------------------------------------- references
def test_thesis_table4_reference_reads_the_same_from_markdown_and_csv():
    md = read_reference(REPO / "docs/reference/thesis_table4.md", TABLE4)
    from_csv = read_reference(REPO / "docs/reference/thesis_table4.csv", TABLE4)
    assert md.rows == from_csv.rows
    assert md.label == "Thesis Table 4: full-scale autoencoders, Euclidean error"
    assert len(md.rows) == 44
    weak_switch_2 = md.rows[('"weak"', '"switch"', "true", "2")]
    assert {k: v.text for k, v in weak_switch_2.items()} == {
        "train/euclid:final": "1.63",
        "test/euclid_balanced:final": "1.52",
        "epochs": "17†",
    }
    assert weak_switch_2["epochs"].value == 17
    assert md.rows[('"regular"', '"blind"', "true", "2")]["train/euclid:final"].text == "N/A"


def test_reference_values_sit_beside_ours_matched_as_yaml_values(tmp_path):
    runs = stacked_runs(tmp_path)
    reference = tmp_path / "ref.csv"
    reference.write_text(
        "config,units,val/euclid_balanced:best,epochs\n"
        "weak_stack,1,1.63,17†\nweak_stack,2.0,2.48,48\nforward,1,9,9\n"
    )
    table = build_table(
        None,
        collect(runs)[1],
        rows=["config"],
        cols=["units"],
        fields=["val/euclid_balanced:best", "epochs"],
        reference=str(reference),
    )
    cell = table.cells[(('"weak_stack"',), ("2",))]
    assert cell.reference["val/euclid_balanced:best"].text == "2.48"  # units "2.0" matched 2
    assert table.cells[(('"weak_stack"',), ("1",))].reference["epochs"].text == "17†"
    assert table.unmatched_reference == ["config=forward, units=1"]


def test_published_fields_no_run_logged_yet_stay_in_the_default_cells(tmp_path):
    """The thesis's test errors show beside our cells before ``convae test`` ran."""
    runs = stacked_runs(tmp_path)
    reference = tmp_path / "ref.csv"
    reference.write_text("config,units,test/euclid_balanced,epochs\nregular_ae,1,0.69,50\n")
    entries = collect(runs)[1]
    plain = build_table(None, entries, rows=["config"], cols=["units"], metrics=["euclid"])
    assert "test/euclid_balanced:final" not in [f.spec for f in plain.fields]  # nobody tested
    table = build_table(
        None, entries, rows=["config"], cols=["units"], metrics=["euclid"], reference=str(reference)
    )
    specs = [f.spec for f in table.fields]
    assert specs.index("test/euclid_balanced:final") < specs.index("epochs")
    cell = table.cells[(('"regular_ae"',), ("1",))]
    assert cell.stats["test/euclid_balanced:final"].n == 0
    assert cell.reference["test/euclid_balanced:final"].value == 0.69


#: Layout keys of each thesis table's ``convae report`` command (docs/results.md section 2).
THESIS_LAYOUTS = {
    2: ("config", "model.init_args.variant"),
    3: ("model.init_args", "model.init_args.architecture", "model.init_args.num_units"),
    5: ("model.init_args.autoencoder_checkpoint", "config", "model.init_args.encoder"),
}


@pytest.mark.parametrize(("number", "rows"), [(2, 6), (3, 36), (5, 24)])
def test_thesis_reference_tables_read_the_same_from_markdown_and_csv(number, rows):
    keys = THESIS_LAYOUTS[number]
    md = read_reference(REPO / f"docs/reference/thesis_table{number}.md", keys)
    from_csv = read_reference(REPO / f"docs/reference/thesis_table{number}.csv", keys)
    assert md.rows == from_csv.rows
    assert md.label.startswith(f"Thesis Table {number}: ")
    assert len(md.rows) == rows


def test_thesis_accuracies_are_fractions_beside_the_printed_percentages():
    """Table 2 prints accuracy and Table 5 error in %; the number compared is our accuracy."""
    table2 = read_reference(REPO / "docs/reference/thesis_table2.md", THESIS_LAYOUTS[2])
    table5 = read_reference(REPO / "docs/reference/thesis_table5.md", THESIS_LAYOUTS[5])
    checked = 0
    for values in [*table2.rows.values(), *table5.rows.values()]:
        for spec, ref in values.items():
            if "acc39" not in spec:
                continue
            match = re.fullmatch(r"([\d.]+) \((error )?([\d.]+)%\)", ref.text)
            assert match, ref.text
            percent = float(match[3])
            accuracy = 100 - percent if match[2] else percent
            assert ref.value == pytest.approx(accuracy / 100, abs=1e-9), ref.text
            checked += 1
    assert checked == 6 + 24 * 2
    weak_switch = table5.rows[('"weak_switch"', '"ours"', '"pretrained"')]
    assert weak_switch["test/acc39_balanced:final"].text == "0.200 (error 80.0%)"
    assert table5.rows[("null", '"literal"', '"random"')]["epochs"].text == "50"
    table3 = read_reference(REPO / "docs/reference/thesis_table3.md", THESIS_LAYOUTS[3])
    worst = table3.rows[('"fixed_trained_encoder_fixed_transpose_decoder"', '"units"', "2")]
    assert {k: v.text for k, v in worst.items()} == {
        "train/euclid:final": "426",
        "test/euclid_balanced:final": "400",
        "epochs": "5†",
    }


@pytest.mark.parametrize(
    ("text", "suffix", "error"),
    [
        (
            "config,units,val/euclid:worst\nweak,1,2\n",
            ".csv",
            r"ref\.csv: column 'val/euclid:worst' is neither a layout key",
        ),
        (
            "config,val/euclid_balanced\nweak,2\n",
            ".csv",
            r"no column for layout key\(s\) \['units'\]",
        ),
        ("config,units,epochs\nweak,1,3\nweak,1.0,4\n", ".csv", r"ref\.csv:3: a second row"),
        ("config,units,epochs\n,1,3\n", ".csv", r"ref\.csv:2: column 'config' is empty"),
        ("config,units,epochs\nweak,1\n", ".csv", r"ref\.csv:2: 2 cells, the header has 3"),
        ("no table here\n", ".md", r"holds no table"),
        ("a,b\n", ".txt", r"expected a \.md or \.csv table, got '\.txt'"),
    ],
)
def test_bad_reference_tables_name_file_line_and_column(tmp_path, text, suffix, error):
    path = tmp_path / f"ref{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        read_reference(path, ["config", "units"])


# ------------------------------------------------------------------------------- errors
def test_bad_layouts_and_metrics_are_refused_before_anything_is_written(tmp_path):
    runs = stacked_runs(tmp_path)
    out = tmp_path / "out"
    cases = [
        (
            {"rows": ["model.init_args.unpol"]},
            r"--rows: 'model.init_args.unpol' is not a key of these runs; keys that vary: \[",
        ),
        ({"rows": ["config"], "cols": ["config"]}, r"--rows and --cols share \['config'\]"),
        ({"metrics": ["acc39"]}, r"--metrics: no run logged 'acc39'; logged: \['euclid'"),
        ({"wandb": "no-project"}, r"--wandb: expected ENTITY/PROJECT"),
        (
            {"reference": str(tmp_path / "missing.md")},
            r"--reference: .*missing\.md' does not exist",
        ),
    ]
    for options, error in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=error):
            build_report([str(r) for r in runs], out=str(out), **options)
        assert not out.exists()


def test_inputs_that_match_nothing_or_no_study(tmp_path):
    with pytest.raises(ValueError, match=r"'runs/nothing\*': no run folders there"):
        collect(["runs/nothing*"])
    missing = tmp_path / "study.db"
    with pytest.raises(ValueError, match=r"no such file"):
        collect(storage=f"sqlite:///{missing}")
    assert not missing.exists()  # Optuna would have created an empty database
    storage = f"sqlite:///{tmp_path / 'two.db'}"
    for name in ("a", "b"):
        optuna.create_study(study_name=name, storage=storage)
    with pytest.raises(ValueError, match=r"holds 2 studies \['a', 'b'\]; choose one with"):
        collect(storage=storage)
    with pytest.raises(ValueError, match=r"study 'c' is not in .*studies there: \['a', 'b'\]"):
        collect(storage=storage, study_name="c")


def test_a_study_without_trials_yet_gives_a_report_saying_so(tmp_path):
    folder = tmp_path / "runs" / "fresh"
    folder.mkdir(parents=True)
    optuna.create_study(study_name="fresh", storage=f"sqlite:///{folder / 'study.db'}")
    report, _ = build_report([str(folder)])
    assert report.out_dir == folder / "report"
    markdown = (folder / "report" / "report.md").read_text()
    assert "No runs to compare yet." in markdown and "## Runs" not in markdown
    assert "- Optuna: optimization history: no complete trials yet" in markdown
    assert (folder / "report" / "table.csv").read_text().startswith("field,mean,std,n,")


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "convae_lightning.report", "runs/none", "--rows", "x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == "error: 'runs/none': no run folders there (nor matching it)\n"


def test_runs_table_lists_runs_by_state_then_in_numeric_order(tmp_path):
    """``version_10`` after ``version_2``; a running run after the finished ones."""
    for n in (10, 2, 1):
        run = write_run(tmp_path / f"runs/regular_ae/version_{n}", {"unpool": "switch"},
                        epochs_of([5.0, 4.0]), seed=n)  # fmt: skip
        write_status(run, "running" if n == 1 else "finished", pid=None)
    build_report([str(tmp_path / "runs/regular_ae")], out=str(tmp_path / "report"))
    runs_table = (tmp_path / "report/report.md").read_text().split("## Runs", 1)[1]
    listed = re.findall(r"^\| \[\S*version_(\d+)\]", runs_table, flags=re.MULTILINE)
    assert listed == ["2", "10", "1"]
