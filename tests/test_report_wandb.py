"""``convae report --wandb ENTITY/PROJECT``: the W&B Report built from the local report.

The Reports API (``wandb-workspaces``) runs for real; only the network is replaced: its one
accessor of the W&B API client (``_get_api``) returns a stand-in server that answers the two
GraphQL calls a report's save makes and records them, so the test reads back exactly what would
have been sent. Offline, not logged in, or without the extra, the command says so in one line and
still writes the local report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from report_helpers import STUDY, build_tiny_study, python, report_cli

from convae_lightning.report.command import build_report
from convae_lightning.report.wandb_report import wandb_run_ids


def reports_api():
    return pytest.importorskip(
        "wandb_workspaces.reports.v2.interface",
        reason="wandb-workspaces (the [wandb-reports] extra) is not installed",
    )


pytestmark = pytest.mark.slow


class FakeServer:
    """What ``wandb_workspaces`` talks to through ``wandb.Api()``: the GraphQL service."""

    app_url = "https://wandb.example"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def execute_graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict:
        variables = dict(variables or {})
        self.calls.append((query, variables))
        if "upsertView" in query:
            view = {
                "id": "VmlldzoxMjM=",
                "name": variables["name"],
                "displayName": variables["displayName"],
                "description": variables["description"],
                "project": {"name": variables["projectName"],
                            "entityName": variables["entityName"]},
                "spec": variables["spec"],
            }  # fmt: skip
            return {"upsertView": {"view": view}}
        if "internalId" in query:
            return {"project": {"internalId": "UHJvamVjdDox"}}
        raise AssertionError(f"unexpected query: {query[:80]}")


class FakeApi:
    def __init__(self) -> None:
        self._service_api = FakeServer()
        self.created: list[tuple[str, str]] = []

    def projects(self, entity: str) -> list:
        return []

    def create_project(self, name: str, entity: str) -> None:
        self.created.append((entity, name))


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory, cli_cache) -> Path:
    return build_tiny_study(tmp_path_factory.getbasetemp() / "report_study", cli_cache)


def panels_of(spec: dict) -> list[dict]:
    grid = next(b for b in spec["blocks"] if b["type"] == "panel-grid")
    return grid["metadata"]["panelBankSectionConfig"]["panels"]


def test_wandb_report_has_the_table_and_panels_over_the_study_runs(
    study_folder, tmp_path, monkeypatch
):
    api = FakeApi()
    monkeypatch.setattr(reports_api(), "_get_api", lambda: api)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    _, message = build_report([str(study_folder)], out=str(tmp_path / "out"), wandb="team/convae")
    assert message == (
        "W&B Report: https://wandb.example/team/convae/reports/Study-tinyunpool--VmlldzoxMjM="
    )
    assert (tmp_path / "out" / "index.html").is_file()
    assert api.created == [("team", "convae")]
    (_, lookup), (_, upsert) = api._service_api.calls
    assert lookup == {"entityName": "team", "projectName": "convae"}
    assert (upsert["entityName"], upsert["projectName"]) == ("team", "convae")
    assert upsert["displayName"] == "Study tinyunpool"
    spec = json.loads(upsert["spec"])
    markdown = next(b["content"] for b in spec["blocks"] if b["type"] == "markdown-block")
    local = (tmp_path / "out" / "report.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert rows[0] == "| unpool | results |" and len(rows) == 3  # header, 2 conditions
    assert all(row in local for row in rows)  # the same table as the local report
    runset = next(b for b in spec["blocks"] if b["type"] == "panel-grid")["metadata"]["runSets"][0]
    assert runset["filters"]["filters"] == [
        {"key": {"section": "run", "name": "group"}, "op": "=", "value": STUDY, "disabled": False}
    ]
    assert runset["grouping"] == [{"section": "config", "name": "model.value.init_args.unpool"}]
    panels = panels_of(spec)
    lines = [p["config"]["metrics"] for p in panels if p["viewType"] == "Run History Line Plot"]
    assert lines == [["train/euclid_epoch"], ["val/euclid_balanced"], ["val/euclid_natural"]]
    kinds = [p["viewType"] for p in panels]
    assert kinds[len(lines):] == [
        "Parallel Coordinates Plot", "Parameter Importance", "Media Browser", "Run Comparer"
    ]  # fmt: skip
    importance = panels[kinds.index("Parameter Importance")]
    assert importance["config"]["targetKey"] == "val/euclid_balanced"
    media = panels[kinds.index("Media Browser")]
    assert media["config"]["mediaKeys"] == ["reconstructions/spectrograms"]


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"WANDB_MODE": "offline"}, "W&B Report not built: WANDB_MODE=offline (it needs the "
                                    "network and `wandb login`)"),
        ({}, "W&B Report not built: not logged in to W&B (run `wandb login`)"),
    ],
)  # fmt: skip
def test_offline_or_logged_out_says_so_in_one_line_and_writes_the_local_report(
    study_folder, cli_cache, tmp_path, env, line
):
    if not env:
        reports_api()  # without the extra, the line says so instead (next test)
    out = tmp_path / "out"
    args = [str(study_folder), "--out", str(out), "--wandb", "team/convae"]
    # A HOME without credentials: no ~/.netrc or W&B settings to find.
    proc = report_cli(args, tmp_path, cli_cache, HOME=str(tmp_path), **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"{line}; the local report is {out / 'index.html'}"
    assert (out / "index.html").is_file() and (out / "report.md").is_file()


def test_missing_extra_gets_a_clear_message(study_folder, cli_cache, tmp_path):
    """With ``wandb_workspaces`` not importable, the message names the extra to install."""
    code = (
        "import sys; sys.modules['wandb_workspaces'] = None; "
        "from convae_lightning.report import main; main(sys.argv[1:])"
    )
    args = [str(study_folder), "--out", str(tmp_path), "--wandb", "team/convae"]
    proc = python(["-c", code, *args], tmp_path, cli_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == (
        "W&B Report not built: wandb-workspaces is not installed (pip install "
        f"'convae-lightning[wandb-reports]'); the local report is {tmp_path / 'index.html'}"
    )


def test_plain_runs_are_selected_by_their_wandb_run_ids(tmp_path):
    run = tmp_path / "runs/weak_stack/version_0"
    for name in (
        "offline-run-20261126_054435-schzly6e",
        "run-20261127_101010-a1b2c3",
        "latest-run",
    ):
        (run / "wandb" / name).mkdir(parents=True)
    assert wandb_run_ids(run) == ["a1b2c3", "schzly6e"]
    assert wandb_run_ids(tmp_path) == []
