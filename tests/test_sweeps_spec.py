"""Sweep specs: parsing, one-line errors naming file and key, conditions, command lines, and
the checks that run every condition through the CLI's parser before any trial."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env
from sweep_helpers import CONF, REPO, write_spec

from convae_lightning.sweeps.check import check_spec
from convae_lightning.sweeps.command import resolve
from convae_lightning.sweeps.parse import load_spec
from convae_lightning.sweeps.space import (
    condition_id,
    count_runs,
    fit_args,
    grid_conditions,
    grid_runs,
    probe_conditions,
    wandb_tags,
)
from convae_lightning.sweeps.spec import SpecError
from convae_lightning.sweeps.storage import StorageError, default_storage, open_storage

REGULAR = str(CONF / "regular_ae.yaml")


@pytest.fixture(autouse=True)
def in_repo(monkeypatch, cli_cache):
    """Shipped specs name conf/ files relative to the repository root, as users run them.

    Checks build DataModules: they share the session's feature cache.
    """
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("CONVAE_CACHE_DIR", str(cli_cache))


def test_unpooling_spec_is_the_thesis_comparison():
    spec = load_spec("sweeps/unpooling.yaml")
    conditions = grid_conditions(spec)
    assert len(conditions) == 12 and count_runs(spec) == 12 * len(spec.seeds)
    assert {c["config"] for c in conditions} == {"regular", "strong", "weak"}
    assert {c["model.init_args.unpool"] for c in conditions} == {"switch", "blind"}
    assert {c["model.init_args.decoder_relu"] for c in conditions} == {True, False}
    assert spec.configs_for({"config": "weak"}) == ("conf/weak_stack.yaml",)
    assert spec.objective.metric == "val/euclid_balanced" and spec.objective.mode == "min"
    assert spec.objective.value == "best" and spec.is_grid and spec.pruner.name == "none"


def test_tune_forward_spec_samples_lr_dropout_and_filters():
    spec = load_spec("sweeps/tune_forward.yaml")
    assert spec.sampler.name == "tpe" and spec.pruner.name == "median"
    lr = spec.param("model.init_args.optimizer.init_args.lr")
    assert lr.kind == "float" and lr.log
    channels = spec.param("model.init_args.conv_channels")
    assert channels.cli_value("narrow") == [8, 16, 32, 250]
    args = fit_args(spec, {"model.init_args.conv_channels": "wide", "seed_everything": 0})
    assert args[args.index("--model.init_args.conv_channels") + 1] == "[16, 32, 64, 1000]"


def test_conditions_follow_when_and_ids_are_stable(tmp_path):
    path = write_spec(
        tmp_path,
        space={
            "config": {"choices": {"regular": REGULAR, "weak": str(CONF / "weak_stack.yaml")}},
            "trainer.max_epochs": {"choices": [1, 2], "when": {"config": "weak"}},
            "model.init_args.decoder_relu": [True, False],
        },
        seeds=[3, 4],
    )
    spec = load_spec(path)
    ids = [condition_id(c) for c in grid_conditions(spec)]
    assert ids == [
        "config=regular,model.init_args.decoder_relu=true",
        "config=regular,model.init_args.decoder_relu=false",
        "config=weak,trainer.max_epochs=1,model.init_args.decoder_relu=true",
        "config=weak,trainer.max_epochs=1,model.init_args.decoder_relu=false",
        "config=weak,trainer.max_epochs=2,model.init_args.decoder_relu=true",
        "config=weak,trainer.max_epochs=2,model.init_args.decoder_relu=false",
    ]
    runs = grid_runs(spec)
    assert [r.seed for r in runs] == [3] * 6 + [4] * 6  # seeds outermost: whole passes first
    assert len({r.key for r in runs}) == 12


def test_fit_args_order_values_and_extra_args(tmp_path):
    path = write_spec(
        tmp_path,
        overrides={"trainer.max_epochs": 2, "trainer.callbacks": []},
        space={"model.init_args.decoder_relu": [True, False], "data.batch_size": [8, 16]},
    )
    spec = load_spec(path)
    params = {"model.init_args.decoder_relu": False, "data.batch_size": 8, "seed_everything": 1}
    args = fit_args(spec, params, ["--trainer.max_epochs", "1"])
    assert args == [
        "fit", "--config", REGULAR,
        "--trainer.max_epochs", "2", "--trainer.callbacks", "[]",
        "--model.init_args.decoder_relu", "false", "--data.batch_size", "8",
        "--seed_everything", "1",
        "--checkpoint.monitor", "val/euclid_balanced", "--checkpoint.mode", "min",
        "--trainer.max_epochs", "1",
    ]  # fmt: skip


def test_wandb_tags_are_key_value_and_short_enough():
    tags = wandb_tags({"model.init_args.unpool": "switch", "x" * 70: 1, "seed_everything": 0})
    assert tags[0] == "model.init_args.unpool=switch" and tags[2] == "seed_everything=0"
    assert all(len(tag) <= 64 for tag in tags)


def test_sampled_sweeps_probe_every_choice_and_both_bounds(tmp_path):
    path = write_spec(
        tmp_path,
        sampler="random",
        n_trials=5,
        space={
            "data.batch_size": {"type": "int", "low": 8, "high": 32, "log": True},
            "model.init_args.unpool": ["switch", "blind"],
        },
    )
    probes = probe_conditions(load_spec(path))
    assert {p["data.batch_size"] for p in probes} == {8, 32}
    assert {p["model.init_args.unpool"] for p in probes} == {"switch", "blind"}


BAD_SPECS = [
    ({"colour": 1}, r"study.yaml: colour: unknown spec key"),
    ({"space": {}}, r"study.yaml: space: empty"),
    ({"space": None}, r"study.yaml: space: empty"),
    ({"config": None}, r"study.yaml: config: missing"),
    ({"config": "conf/nope.yaml"}, r"study.yaml: config: config file 'conf/nope.yaml' not found"),
    (
        {"config": REGULAR, "space": {"config": [REGULAR], "model.init_args.unpool": ["s"]}},
        r"config: give the base config here or as space.config, not both",
    ),
    ({"space": {"model.init_args.unpool": []}}, r"space.model.init_args.unpool.choices: must be"),
    (
        {"space": {"model.init_args.unpool": ["switch", "switch"]}},
        r"space.model.init_args.unpool.choices: repeated value",
    ),
    ({"space": {"data.batch_size": {"type": "int", "low": 8, "high": 8, "step": 1}}}, r"low \(8\)"),
    (
        {"space": {"data.batch_size": {"type": "float", "low": 0, "high": 1, "log": True}}},
        r"space.data.batch_size.low: must be positive on a log range",
    ),
    (
        {"space": {"data.batch_size": {"type": "int", "low": 8, "high": 32}}},
        r"space.data.batch_size: grid sweeps need choices or a step",
    ),
    ({"space": {"data.batch_size": {"type": "complex"}}}, r"data.batch_size.type: must be 'int'"),
    (
        {"space": {"model.init_args.unpool": {"choices": ["switch"], "when": {"mode": "weak"}}}},
        r"space.model.init_args.unpool.when.mode: must name a categorical space key listed before",
    ),
    (
        {
            "space": {
                "model.init_args.unpool": ["switch", "blind"],
                "data.batch_size": {"choices": [8], "when": {"model.init_args.unpool": "nearest"}},
            }
        },
        r"space.data.batch_size.when.model.init_args.unpool: 'nearest' is not among",
    ),
    ({"space": {"seed_everything": [1, 2]}}, r"space.seed_everything: set seeds with the spec"),
    ({"seeds": [0, 0]}, r"study.yaml: seeds: must be a non-empty list of distinct ints"),
    ({"seeds": ["a"]}, r"seeds: must be"),
    ({"objective": {"direction": "min"}}, r"study.yaml: objective: needs \{metric"),
    ({"objective": {"metric": "val/x", "direction": "up"}}, r"objective.direction: must be"),
    ({"objective": {"metric": "val/x", "value": "mean"}}, r"objective.value: must be best or last"),
    ({"sampler": "cmaes"}, r"study.yaml: sampler: must be one of \['grid', 'tpe', 'random'\]"),
    ({"sampler": {"name": "tpe", "colour": 1}, "n_trials": 2}, r"sampler: .*colour"),
    ({"sampler": "tpe"}, r"n_trials: tpe sweeps need n_trials or timeout"),
    ({"pruner": "asha"}, r"pruner: must be one of \['none', 'median', 'hyperband'\]"),
    ({"n_trials": 0}, r"n_trials: must be an int >= 1"),
    ({"heartbeat": {"interval": 5, "grace_period": 5}}, r"heartbeat.grace_period: must be longer"),
    ({"study_name": "a/b"}, r"study_name: must be a folder-safe name"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_SPECS)
def test_bad_spec_is_one_line_naming_file_and_key(tmp_path, fields, message):
    path = write_spec(tmp_path, **fields)
    with pytest.raises(SpecError, match=message) as caught:
        load_spec(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_yaml_errors_name_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("space:\n  a: [1, 2\nseeds: [0]\n")
    with pytest.raises(SpecError, match=r"broken.yaml: line \d+: not valid YAML"):
        load_spec(path)
    with pytest.raises(SpecError, match=r"missing.yaml: no such sweep spec file"):
        load_spec(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- checks through the parser
CLI_REJECTS = [
    (
        {"space": {"model.init_args.unpoool": ["switch"]}},
        (),
        r"space.model.init_args.unpoool: unknown config key: Option 'unpoool' is not accepted",
    ),
    (
        {"space": {"trainer.max_epoch": [1]}},
        (),
        r"space.trainer.max_epoch: .*unknown config key 'trainer.max_epoch' "
        r"\(did you mean trainer.max_epochs\?\)",
    ),
    (
        {"space": {"model.init_args.unpool": ["switch", "nearest"]}},
        (),
        r"space.model.init_args.unpool: value nearest rejected: "
        r"'nearest' is not allowed; allowed: 'switch', 'blind' \(or a list of them\)$",
    ),
    (
        {"space": {"model.init_args.num_units": [1, 9]}},
        (),
        r"space.model.init_args.num_units: value 9 rejected: .*num_units must be between 1 and 4",
    ),
    (
        {"overrides": {"model.init_args.num_units": 9}},
        (),
        r"overrides.model.init_args.num_units: .*num_units must be between 1 and 4",
    ),
    ({}, ("--trainer.max_epochs", "many"), r": arguments after --: trainer.max_epochs: .*int"),
]


@pytest.mark.parametrize(("fields", "extra", "message"), CLI_REJECTS)
def test_conditions_the_cli_rejects_fail_before_any_trial(tmp_path, fields, extra, message):
    path = write_spec(tmp_path, **fields)
    with pytest.raises(SpecError, match=message) as caught:
        check_spec(load_spec(path), extra)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "runs").exists() and not (REPO / "runs" / "study").exists()


def test_every_condition_of_a_valid_spec_is_checked(tmp_path):
    path = write_spec(
        tmp_path,
        space={
            "config": {"choices": {"regular": REGULAR, "strong": str(CONF / "strong_stack.yaml")}},
            "model.init_args.decoder_relu": [True, False],
        },
    )
    assert check_spec(load_spec(path)) == 4


# ------------------------------------------------------------------- options and storages
def test_command_options_resolve_budget_and_storage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1]))
    run = resolve(spec)
    assert run.n_trials == 4 and run.storage_url == "sqlite:///runs/study/study.db"
    assert resolve(spec, workers=2).storage_url == "runs/study/journal.log"
    assert resolve(spec, n_trials=3, study_name="other").study_name == "other"
    with pytest.raises(SpecError, match=r"n_trials: 5 is more than the grid's 4 runs"):
        resolve(spec, n_trials=5)
    with pytest.raises(StorageError, match=r"SQLite is not safe for several worker processes"):
        resolve(spec, workers=2, storage="sqlite:///x.db")
    # A study that lives in SQLite stays there; it cannot take several workers.
    open_storage(default_storage("study", 1))
    with pytest.raises(StorageError, match=r"runs/study/study.db, which is not safe"):
        default_storage("study", 2)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+psycopg2://nobody@127.0.0.1:1/none", r"cannot connect: .*127.0.0.1.*refused"),
        ("nosuchdb://x/y", r"storage nosuchdb://x/y: cannot connect"),
        ("postgresql+psycopg2://u:secret@127.0.0.1:1/none", r"u:\*\*\*@127.0.0.1"),
    ],
)
def test_unreachable_storage_is_one_line(url, message):
    with pytest.raises(StorageError, match=message) as caught:
        open_storage(url)
    assert "\n" not in str(caught.value) and "secret" not in str(caught.value)


@pytest.mark.slow
def test_dry_run_prints_conditions_and_run_count_and_runs_nothing(tmp_path, cli_cache):
    """``convae sweep sweeps/unpooling.yaml --dry-run`` from the repo."""
    env = {**cli_env(cli_cache), "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    before = sorted(p.name for p in REPO.iterdir())
    convae = str(Path(sys.executable).parent / "convae")
    result = subprocess.run(
        [convae, "sweep", "sweeps/unpooling.yaml", "--dry-run", "--", "--trainer.max_epochs", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    conditions = [line for line in lines if line.startswith("[")]
    assert len(conditions) == 12
    assert conditions[0] == (
        "[0] config=regular,model.init_args.unpool=switch,model.init_args.decoder_relu=true"
    )
    assert "12 conditions x 1 seed(s) (0) = 12 runs" in result.stdout
    example = next(line for line in lines if line.strip().startswith("convae fit"))
    assert example.strip().endswith("--trainer.max_epochs 1")
    assert sorted(p.name for p in REPO.iterdir()) == before  # no runs/, no study file


def test_bad_spec_exits_2_with_one_line(tmp_path, capsys):
    from convae_lightning.sweeps import main

    path = write_spec(tmp_path, space={})
    with pytest.raises(SystemExit) as caught:
        main([str(path), "--dry-run"])
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}: space: empty: name at least one CLI key to vary"


def test_a_rejected_condition_leaves_no_study_behind(tmp_path, monkeypatch, capsys):
    from convae_lightning.sweeps import main

    monkeypatch.chdir(tmp_path)
    path = write_spec(tmp_path, space={"model.init_args.unpool": ["nearest"]})
    with pytest.raises(SystemExit) as caught:
        main([str(path)])
    assert caught.value.code == 2
    assert "space.model.init_args.unpool: value nearest rejected" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
