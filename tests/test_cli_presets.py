"""Callback presets (``callbacks/*.yaml``) and overlays (``conf/overlays/*.yaml``) composed onto
every run config, checked through the CLI's own parser (in-process: no run starts)."""

from __future__ import annotations

import importlib

import pytest
import yaml
from cli_helpers import CONF, PRESETS, RUN_CONFIGS, STACKS, run_cli

OVERLAYS = CONF / "overlays"
PRESET_NAMES = (
    "tied_transpose_sync",
    "layer_freezing",
    "stack_growth",
    "reconstruction_logger",
    "early_stopping",
)


def config_class_path(name: str) -> str:
    return yaml.safe_load((CONF / f"{name}.yaml").read_text())["model"]["class_path"]


# ------------------------------------------------------------------------------ --print_config
def test_print_config_shows_presets_appended(tmp_path, cli_cache):
    args = ["fit", "--config", str(CONF / "weak_stack.yaml")]
    args += [
        f"--trainer.callbacks+={PRESETS / p}.yaml" for p in PRESET_NAMES if p != "stack_growth"
    ]
    args.append("--print_config")
    run = run_cli("lightning", args, tmp_path, cli_cache, "weak_stack", timeout=120)
    assert run.returncode == 0, run.explain()
    config = yaml.safe_load(run.stdout)
    assert config["model"]["class_path"] == "convae_lightning.models.StackedAutoencoder"
    own = [cb["class_path"] for cb in yaml.safe_load((CONF / "weak_stack.yaml").read_text())
           ["trainer"]["callbacks"]]  # fmt: skip
    appended = [yaml.safe_load((PRESETS / f"{p}.yaml").read_text())["class_path"]
                for p in PRESET_NAMES if p != "stack_growth"]  # fmt: skip
    assert [cb["class_path"] for cb in config["trainer"]["callbacks"]] == own + appended
    freezing = config["trainer"]["callbacks"][len(own) + 1]
    assert freezing["init_args"]["freeze"] == ["encoder.0.conv.weight"]
    assert not (tmp_path / "runs").exists(), "--print_config must not start a run"


# --------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_preset_is_one_callback(preset):
    """Each preset is a single ``class_path``/``init_args`` mapping that builds its callback."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch.callbacks import Callback

    path = PRESETS / f"{preset}.yaml"
    spec = yaml.safe_load(path.read_text())
    assert isinstance(spec, dict)
    assert set(spec) <= {"class_path", "init_args"}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--callback", type=Callback, enable_path=True)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    callback = instantiate(parser.parse_args(["--callback", str(path)])).callback
    module, _, name = spec["class_path"].rpartition(".")
    assert type(callback) is getattr(importlib.import_module(module), name)
    for key, value in (spec.get("init_args") or {}).items():
        assert getattr(callback, key) == value, key


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_every_preset_composes_with_every_config(name, capsys):
    from convae_lightning.cli import ConvaeCLI

    args = ["fit", "--config", str(CONF / f"{name}.yaml")]
    args += [f"--trainer.callbacks+={PRESETS / p}.yaml" for p in PRESET_NAMES]
    with pytest.raises(SystemExit) as exit_info:
        ConvaeCLI(args=[*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    own = yaml.safe_load((CONF / f"{name}.yaml").read_text())["trainer"].get("callbacks") or []
    paths = [cb["class_path"] for cb in config["trainer"]["callbacks"]]
    assert paths[: len(own)] == [cb["class_path"] for cb in own]
    assert paths[len(own) :] == [
        yaml.safe_load((PRESETS / f"{p}.yaml").read_text())["class_path"] for p in PRESET_NAMES
    ]


def print_config(capsys, *configs: str) -> dict:
    """The resolved config of ``fit --config A --config B ... --print_config`` (in-process);
    names without a folder are run configs, ``overlays/x`` overlays."""
    from convae_lightning.cli import ConvaeCLI

    args = ["fit"]
    for name in configs:
        args += ["--config", str(CONF / f"{name}.yaml")]
    with pytest.raises(SystemExit) as exit_info:
        ConvaeCLI(args=[*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_thesis_size_overlay_sizes_the_data(name, capsys):
    config = print_config(capsys, name, "overlays/thesis_size")
    data = config["data"]
    assert (data["train_per_class"], data["eval_per_class"], data["batch_size"]) == (500, 200, 100)
    assert config["model"]["class_path"] == config_class_path(name)


@pytest.mark.parametrize("name", STACKS)
def test_thesis_size_overlay_allows_50_epochs_per_unit(name, capsys):
    """thesis_size_stack.yaml restates the stacks' callbacks with up to 50 epochs per unit."""
    config = print_config(capsys, name, "overlays/thesis_size_stack")
    growth = next(cb for cb in config["trainer"]["callbacks"]
                  if cb["class_path"].endswith("StackGrowth"))  # fmt: skip
    cap = growth["init_args"]["max_epochs_per_unit"]
    assert cap is None or cap >= 50, f"max_epochs_per_unit={cap}"
    assert config["trainer"]["max_epochs"] >= 4 * 50


@pytest.mark.parametrize("name", [n for n in RUN_CONFIGS if n not in STACKS])
def test_thesis_size_overlay_caps_single_runs_at_50_epochs(name, capsys):
    """The thesis (Appendix A, 5.1) capped training at the fiftieth epoch."""
    config = print_config(capsys, name, "overlays/thesis_size")
    assert config["trainer"]["max_epochs"] <= 50


def test_overlays_are_not_run_configs():
    """Run configs name a model class; overlays only override keys of one."""
    assert OVERLAYS.is_dir() and list(OVERLAYS.glob("*.yaml"))
    for path in OVERLAYS.glob("*.yaml"):
        model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
        assert "class_path" not in model, path.name
    for name in RUN_CONFIGS:
        assert config_class_path(name).startswith("convae_lightning.models."), name


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_print_config_makes_no_run_folder(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    from convae_lightning.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONF / f"{name}.yaml"), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["model"]["class_path"]
    assert not (tmp_path / "runs").exists()
