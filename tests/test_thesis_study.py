"""CI-sized smoke runs of the reproduction study (``sweeps/thesis_*.yaml``, docs/results.md).

Every spec runs as users run it, ``convae sweep SPEC`` in a folder holding ``conf/``,
``sweeps/`` and ``docs/``, on the embedded corpus cut to one short epoch per trial by the extra
fit arguments after ``--`` (docs/sweeps.md; Table 4 keeps its epoch caps, so that its stacks grow
to 4 units). ``--n-trials`` = the number of conditions runs each condition once, with the spec's
first seed (grid runs go seeds outermost). Table 3, Table 5 and the beyond-the-thesis classifiers
take Table 2's, Table 4's and the beyond-the-thesis autoencoders' checkpoints through their trial
references, so those studies run first, in the same folder, and every test shares the runs. Each
table's ``convae report`` command of docs/results.md then lays the runs out beside the thesis's
values (``docs/reference/thesis_table*.md``).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import cli_env
from optuna.trial import TrialState
from sweep_helpers import REPO

from convae_lightning.report.views import Field, format_value
from convae_lightning.sweeps.parse import load_spec
from convae_lightning.sweeps.space import condition_id, grid_conditions
from convae_lightning.sweeps.storage import open_storage

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SPECS = (
    "thesis_table2",
    "thesis_table3",
    "thesis_table4",
    "thesis_table5",
    "thesis_table5_literal",
    "thesis_figure3",
    "thesis_beyond_ae",
    "thesis_beyond",
    "thesis_beyond_baselines",
)
#: Specs of the thesis's tables with a reference table, ``docs/reference/<spec>.md``.
TABLES = ("thesis_table2", "thesis_table3", "thesis_table4", "thesis_table5")
#: Studies whose checkpoints a spec's trial references take.
NEEDS = {
    "thesis_table3": "thesis_table2",
    "thesis_table5": "thesis_table4",
    "thesis_table5_literal": "thesis_table4",
    "thesis_beyond": "thesis_beyond_ae",
}
#: One training and one evaluation batch of 8, no sanity check, CSV logs only: seconds a trial.
SMOKE = [
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "1",
    "--trainer.limit_val_batches", "1",
    "--trainer.num_sanity_val_steps", "0",
    "--data.train_per_class", "5",
    "--data.eval_per_class", "3",
    "--data.batch_size", "8",
    "--trainer.logger",
    json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                 "init_args": {"save_dir": "runs"}}]),
]  # fmt: skip
#: Specs whose trials keep their own epoch caps: Table 4's stacks add a unit every 3 epochs
#: (their StackGrowth), and its reference rows and Table 5 need all 4 units.
OWN_EPOCHS = ("thesis_table4",)
#: The CLI key of each spec's trial reference and the study it refers to.
REFERENCES = {
    "thesis_table3": ("model.init_args.encoder_checkpoint", "thesis_table2"),
    "thesis_table5": ("model.init_args.autoencoder_checkpoint", "thesis_table4"),
    "thesis_table5_literal": ("model.init_args.autoencoder_checkpoint", "thesis_table4"),
    "thesis_beyond": ("model.init_args.autoencoder_checkpoint", "thesis_beyond_ae"),
}


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def study_folder(path: Path) -> Path:
    """A folder like a checkout: the repository's ``conf/``, ``sweeps/`` and ``docs/``."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("conf", "sweeps", "docs"):
        (path / name).symlink_to(REPO / name)
    return path


class Study:
    """Runs each spec once (its referred studies first) and keeps the output for every test."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.outputs: dict[str, tuple[int, str]] = {}

    def conditions(self, name: str) -> list[str]:
        with working_directory(self.folder):
            return [condition_id(c) for c in grid_conditions(load_spec(f"sweeps/{name}.yaml"))]

    def run(self, name: str) -> tuple[int, str]:
        if name not in self.outputs:
            if name in NEEDS:
                self.run(NEEDS[name])
            command = [
                str(BIN / "convae"), "sweep", f"sweeps/{name}.yaml",
                "--n-trials", str(len(self.conditions(name))), "--workers", "2", "--",
                *smoke_args(name),
            ]  # fmt: skip
            result = subprocess.run(
                command, cwd=self.folder, env=self.env, capture_output=True, text=True,
                timeout=900,
            )  # fmt: skip
            self.outputs[name] = (result.returncode, result.stdout + result.stderr)
        return self.outputs[name]

    def trials(self, name: str) -> list[optuna.trial.FrozenTrial]:
        storage = open_storage(str(self.folder / "runs" / name / "journal.log"))
        return optuna.load_study(study_name=name, storage=storage).trials


def smoke_args(name: str) -> list[str]:
    """:data:`SMOKE`, less ``--trainer.max_epochs`` for the specs in :data:`OWN_EPOCHS`."""
    args = list(SMOKE)
    if name in OWN_EPOCHS:
        index = args.index("--trainer.max_epochs")
        del args[index : index + 2]
    return args


def report_commands() -> dict[str, list[str]]:
    """Each study's ``convae report`` arguments after its folder, as docs/results.md gives them."""
    text = (REPO / "docs/results.md").read_text(encoding="utf-8")
    commands = {}
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["convae", "report"]:
                commands[Path(words[2]).name] = words[3:]
    return commands


@pytest.fixture(scope="module")
def env(cli_cache) -> dict[str, str]:
    return {**cli_env(cli_cache), "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}


@pytest.fixture(scope="module")
def study(tmp_path_factory, env) -> Study:
    return Study(study_folder(tmp_path_factory.mktemp("study")), env)


@pytest.mark.parametrize("name", SPECS)
def test_every_condition_of_the_thesis_spec_completes_with_a_finite_objective(study, name):
    code, output = study.run(name)
    conditions = study.conditions(name)
    assert code == 0, output[-4000:]
    assert f"{len(conditions)}/{len(conditions)} runs complete, 0 failed" in output
    trials = study.trials(name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["condition"] for t in complete) == sorted(conditions)
    for trial in complete:
        assert trial.user_attrs["seed"] == 0
        assert math.isfinite(trial.value), trial.user_attrs["condition"]
        assert (study.folder / trial.user_attrs["run_dir"] / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_trial_references_take_the_checkpoint_of_the_referred_run_of_the_same_seed(study, name):
    key, other = REFERENCES[name]
    assert study.run(name)[0] == 0
    ran = [t for t in study.trials(other) if "run_dir" in t.user_attrs]  # not seeds 1, 2
    upstream = {(study.folder / t.user_attrs["run_dir"]).resolve(): t for t in ran}
    referring = [t for t in study.trials(name) if key in t.params]
    assert referring, f"no {name} trial used {key}"
    for trial in referring:
        args = trial.user_attrs["fit_args"]
        path = Path(args[args.index(f"--{key}") + 1])
        assert path.is_file()
        source = upstream[path.parents[1]]  # runs/<other>/trial_N/checkpoints/x.ckpt
        assert source.params["seed_everything"] == trial.params["seed_everything"]
        assert source.state == TrialState.COMPLETE


def test_a_referring_spec_is_checked_before_the_referred_study_exists(tmp_path, env):
    """Table 5's dry run builds every classifier on a stand-in of each referred autoencoder."""
    folder = study_folder(tmp_path / "fresh")
    result = subprocess.run(
        [str(BIN / "convae"), "sweep", "sweeps/thesis_table5.yaml", "--dry-run"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12 conditions x 3 seed(s) (0, 1, 2) = 36 runs" in result.stdout
    assert "<checkpoints/last.ckpt of thesis_table4 trial config=regular," in result.stdout
    assert not (folder / "runs").exists()


@pytest.mark.parametrize("name", TABLES)
def test_report_puts_every_published_value_of_the_thesis_table_beside_a_condition(study, name):
    """docs/results.md's ``convae report`` of the study, with its thesis table as reference: no
    reference row is left without runs, and ``table.csv`` carries every published value."""
    assert study.run(name)[0] == 0
    reference = f"docs/reference/{name}.md"
    args = report_commands()[name]
    others = [arg for arg in args if arg.startswith("runs/")]  # studies reported beside it
    for other in others:
        assert study.run(Path(other).name)[0] == 0
        args.remove(other)
    if "--reference" in args:
        index = args.index("--reference")
        assert args[index + 1] == reference
        del args[index : index + 2]
    result = subprocess.run(
        [str(BIN / "convae"), "report", f"runs/{name}", *others, "--reference", reference, *args],
        cwd=study.folder, env=study.env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = study.folder / "runs" / name / "report"
    assert "reference rows without runs" not in (report / "report.md").read_text("utf-8")
    if "--baseline" in args:  # Table 5: every pretrained classifier against the random one
        with open(report / "paired.csv", newline="", encoding="utf-8") as file:
            paired = list(csv.DictReader(file))
        compared = {line["model.init_args.encoder"] for line in paired}
        assert compared == {"pretrained", "pretrained_fixed", "random_fixed"}
        assert {line["n"] for line in paired} == {"1"}  # the smoke study runs seed 0 only
    with open(report / "table.csv", newline="", encoding="utf-8") as file:
        lines = list(csv.DictReader(file))
    keys = list(lines[0])[: list(lines[0]).index("field")]  # the --rows, then the --cols keys
    ours = {(*(line[k] for k in keys), line["field"]): line for line in lines}
    with open(REPO / reference.replace(".md", ".csv"), newline="", encoding="utf-8") as file:
        published = list(csv.DictReader(file))
    assert published
    for row in published:
        cell = tuple(format_value(yaml.safe_load(row[k]), width=1000) for k in keys)
        for column, text in row.items():
            if column in keys or column == "note" or not text:
                continue
            line = ours[(*cell, Field.parse(column).spec)]
            number = re.search(r"\d+\.?\d*", text)
            assert line["reference"] == text
            assert line["reference_value"] == (repr(float(number[0])) if number else "")
