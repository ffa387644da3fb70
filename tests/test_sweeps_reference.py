"""Trial references (``trial_of``): a choice whose value is another study's trial file, checked
against the other spec when parsed and looked up in the other study when a trial starts."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from sweep_helpers import REPO, write_spec

from convae_lightning.sweeps.parse import load_spec
from convae_lightning.sweeps.reference import ReferenceMissingError, resolve
from convae_lightning.sweeps.space import describe_reference, fit_args, grid_conditions
from convae_lightning.sweeps.spec import SpecError, TrialReference
from convae_lightning.sweeps.storage import open_storage

KEY = "model.init_args.autoencoder_checkpoint"


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    """A working directory with the other sweep (``ae.yaml``: unpool x 2, seeds 0 and 1)."""
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, "ae", seeds=[0, 1])
    return tmp_path


def referring_spec(folder: Path, reference: dict, seeds: tuple[int, ...] = (0,)) -> Path:
    spec = {
        "config": str(REPO / "conf" / "pretrained_classifier.yaml"),
        "space": {KEY: {"choices": {"ae": reference}}},
        "seeds": list(seeds),
        "objective": {"metric": "val/acc48_balanced", "direction": "maximize"},
    }
    path = folder / "clf.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_reference_is_parsed_against_the_other_spec(folder):
    reference = {"trial_of": "ae.yaml", "where": {"model.init_args.unpool": "blind"}}
    spec = load_spec(referring_spec(folder, reference))
    (reference,) = spec.param(KEY).values.values()
    assert reference == TrialReference(
        "ae.yaml", "ae", None, {"model.init_args.unpool": "blind"}, "checkpoints/last.ckpt", (0, 1)
    )
    assert grid_conditions(spec) == [{KEY: "ae"}]
    args = fit_args(spec, {KEY: "ae", "seed_everything": 0}, resolver=describe_reference)
    wanted = "<checkpoints/last.ckpt of ae trial model.init_args.unpool=blind,seed=0>"
    assert args[args.index(f"--{KEY}") + 1] == wanted
    assert load_spec(spec.path).identity() == spec.identity()  # stored as plain data


@pytest.mark.parametrize(
    ("reference", "seeds", "message"),
    [
        ({"trial_of": "nope.yaml"}, (0,),
         "space.model.init_args.autoencoder_checkpoint.choices.ae.trial_of: sweep spec "
         "'nope.yaml' not found"),
        ({"trial_of": "ae.yaml"}, (0,),
         "choices.ae.where: must pick exactly one condition of ae.yaml, picks 2"),
        ({"trial_of": "ae.yaml", "where": {"model.init_args.unpool": "max"}}, (0,),
         "choices.ae.where.model.init_args.unpool: 'max' is not in ae.yaml's"),
        ({"trial_of": "ae.yaml", "where": {"model.init_args.unpool": "switch"}}, (0, 2),
         "choices.ae: ae.yaml has no runs with seeds [2]"),
        ({"trial_of": "ae.yaml", "where": {"model.init_args.unpool": "switch"}, "fle": "x"}, (0,),
         "choices.ae.fle: unknown; allowed: ['trial_of', 'where', 'file', 'study']"),
        ({"trial_of": "ae.yaml", "where": {"model.init_args.unpool": "switch"}, "file": "/x"},
         (0,), "choices.ae.file: must be a relative name, got '/x'"),
    ],
)  # fmt: skip
def test_reference_mistakes_name_the_key(folder, reference, seeds, message):
    with pytest.raises(SpecError) as error:
        load_spec(referring_spec(folder, reference, seeds))
    assert str(error.value).startswith(f"{folder / 'clf.yaml'}: ")
    assert message in str(error.value)


def test_unlabelled_references_are_refused(folder):
    path = referring_spec(folder, {})
    data = yaml.safe_load(path.read_text())
    data["space"][KEY] = [{"trial_of": "ae.yaml"}]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="choices: give each trial_of reference a label"):
        load_spec(path)


def record_trial(folder: Path, unpool: str, seed: int, files: tuple[str, ...]) -> Path:
    """A COMPLETE trial of study ``ae`` in ``runs/ae/study.db``, with a run folder holding
    ``files``, as a sweep leaves it."""
    storage = open_storage(f"sqlite:///{folder / 'runs' / 'ae' / 'study.db'}")
    study = optuna.create_study(study_name="ae", storage=storage, load_if_exists=True)
    study.enqueue_trial({"model.init_args.unpool": unpool, "seed_everything": seed})
    trial = study.ask()  # the enqueued parameters, as a grid sweep's worker gets them
    trial.suggest_categorical("model.init_args.unpool", ["switch", "blind"])
    trial.suggest_categorical("seed_everything", [0, 1])
    run_dir = folder / "runs" / "ae" / f"trial_{trial.number}"
    for name in files:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(b"checkpoint")
    trial.set_user_attr("run_dir", f"runs/ae/trial_{trial.number}")
    trial.set_user_attr("run_dir_abs", str(run_dir))
    study.tell(trial, 1.0)
    return run_dir


def test_resolve_finds_the_complete_trial_of_the_condition_and_seed(folder):
    reference = TrialReference("ae.yaml", "ae", None, {"model.init_args.unpool": "blind"})
    with pytest.raises(
        ReferenceMissingError, match=r"study 'ae' not found .* run `convae sweep ae"
    ):
        resolve(reference, 0)
    record_trial(folder, "switch", 0, ("checkpoints/last.ckpt",))
    blind_seed_1 = record_trial(folder, "blind", 1, ("checkpoints/last.ckpt",))
    with pytest.raises(ReferenceMissingError, match="seed=0: study 'ae' has no COMPLETE trial"):
        resolve(reference, 0)
    assert resolve(reference, 1) == str(blind_seed_1 / "checkpoints" / "last.ckpt")
    best = TrialReference("ae.yaml", "ae", None, {"model.init_args.unpool": "blind"},
                          "checkpoints/epoch=*.ckpt")  # fmt: skip
    with pytest.raises(ReferenceMissingError, match=r"trial 1 \(.*trial_1\) has no checkpoints/"):
        resolve(best, 1)
    blind_seed_0 = record_trial(folder, "blind", 0, ("checkpoints/epoch=3-step=8.ckpt",))
    assert resolve(best, 0) == str(blind_seed_0 / "checkpoints" / "epoch=3-step=8.ckpt")


def test_table3_spec_rows_are_the_thesis_rows(monkeypatch):
    """The study's Table 3 rows set the same arguments as the model tests' twelve rows."""
    from test_models_thesis import TABLE3_ROWS

    monkeypatch.chdir(REPO)
    row = load_spec("sweeps/thesis_table3.yaml").param("model.init_args")

    def normal(args: dict) -> tuple:
        return (args["encoder"], args.get("decoder_conv", "free"), tuple(args.get("frozen", ())))

    assert len(row.choices) == 12
    assert sorted(normal(row.values[label]) for label in row.choices) == sorted(
        normal(args) for args in TABLE3_ROWS.values()
    )
