"""``convae data stats|prepare ROOT`` run as real subprocesses."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import corrupt_flac_frames
from rich.console import Console

from convae_lightning.cli import main
from convae_lightning.data.phones import PHONES_39, PHONES_48
from convae_lightning.data.stats import corpus_stats, print_stats
from convae_lightning.data.timit import embedded_corpus_root
from convae_lightning.synth.toy import write_toy_corpus


@pytest.fixture(scope="module")
def cli_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "TIMIT"
    return write_toy_corpus(root, {"TRAIN": 3, "TEST": 1}, sentences=2, phones_per_sentence=12)


@pytest.fixture(scope="module")
def damaged_corpus(cli_corpus, tmp_path_factory) -> tuple[Path, list[Path]]:
    """A FLAC copy of the corpus with two files whose headers read but whose frames do not."""
    root = tmp_path_factory.mktemp("damaged") / "TIMIT"
    write_toy_corpus(
        root, {"TRAIN": 3, "TEST": 1}, sentences=2, phones_per_sentence=12, audio_format="flac"
    )
    bad = sorted(root.rglob("*.flac"))[1:3]
    for path in bad:
        corrupt_flac_frames(path)
    return root, bad


def convae(*args: str, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "CONVAE_CACHE_DIR": str(cache), "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "convae_lightning.cli", "data", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture(scope="module")
def runs(cli_corpus, tmp_path_factory) -> dict[str, tuple]:
    """Every CLI process of this module, started at once (each spends ~4 s importing torch)."""
    base = tmp_path_factory.mktemp("cli_runs")
    root = str(cli_corpus)
    commands = {
        "stats": (["stats", root], base / "stats_env"),
        "json": (["stats", root, "--json_output", "true"], base / "json_env"),
        "prepare": (["prepare", root, "--cache_dir", str(base / "explicit")], base / "env"),
        "serial": (["prepare", root, "--workers", "1", "--cache_dir", str(base / "serial")], base),
        "bad_root": (["stats", str(base / "no_such_corpus")], base / "bad_env"),
    }
    procs = {name: convae(*args, cache=env) for name, (args, env) in commands.items()}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        results[name] = (proc.returncode, out, err, base)
    return results


@pytest.mark.slow
def test_stats_tables(cli_corpus, runs):
    code, out, err, base = runs["stats"]
    assert code == 0, err
    for word in (
        "utterances",
        "speakers",
        "phones",
        "discarded",
        "Phones per class (48 classes)",
        "Phones per class (39 classes)",
        "missing classes",
    ):
        assert word in out, word
    assert str(cli_corpus) in out.replace("\n", "")
    assert not (base / "stats_env").exists()  # stats builds no cache


@pytest.mark.slow
def test_stats_json_counts(runs):
    code, out, err, _ = runs["json"]
    assert code == 0, err
    stats = json.loads(out)
    splits = stats["splits"]
    # 4 speakers x 2 SX sentences (SA1 dropped); one TRAIN speaker held out for validation.
    assert {s: splits[s]["speakers"] for s in splits} == {"train": 2, "val": 1, "test": 1}
    assert {s: splits[s]["utterances"] for s in splits} == {"train": 4, "val": 2, "test": 2}
    for split in splits.values():
        assert set(split["phones_per_class_48"]) == set(PHONES_48)
        assert set(split["phones_per_class_39"]) == set(PHONES_39)
        assert sum(split["phones_per_class_48"].values()) == split["phones"]
        assert sum(split["phones_per_class_39"].values()) == split["phones"]
        assert split["kept"] + split["discarded"] == split["phones"]
    total = sum(s["phones"] for s in splits.values())
    assert total <= 8 * 14  # 12 body phones + 2 h# per sentence, minus deleted q
    assert splits["train"]["discarded"] == int(0.05 * splits["train"]["phones"])
    assert stats["skipped_files"] == 0 and stats["corpus_sample_rate"] == 16000


@pytest.mark.slow
def test_prepare_builds_the_cache(runs):
    code, out, err, base = runs["prepare"]
    assert code == 0, err
    built = list((base / "explicit").glob("*/meta.json"))
    assert len(built) == 1
    assert not (base / "env").exists()  # --cache_dir wins over $CONVAE_CACHE_DIR
    meta = json.loads(built[0].read_text())
    assert "patch shape (C, F, T)" in out and "discarded" in out and "speakers" in out
    for split in ("train", "val", "test"):
        assert (
            f"{split}: {meta['kept'][split]} phones kept, {meta['discarded'][split]} discarded"
            in out
        )


@pytest.mark.slow
def test_prepare_with_one_worker_writes_the_same_cache(runs):
    """The default build runs worker processes (one per core); --workers 1 builds in-process."""
    for name in ("prepare", "serial"):
        assert runs[name][0] == 0, runs[name][2]
    base = runs["serial"][3]
    (serial,) = (base / "serial").glob("*/meta.json")
    (default,) = (base / "explicit").glob("*/meta.json")
    assert serial.parent.name == default.parent.name
    for path in default.parent.iterdir():
        assert path.read_bytes() == (serial.parent / path.name).read_bytes(), path.name


@pytest.mark.slow
def test_bad_root_exits_non_zero_naming_the_path(runs):
    code, _, err, base = runs["bad_root"]
    assert code != 0
    assert str(base / "no_such_corpus") in err


def skipped_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


# In-process from here on: the same parser and commands as `convae data ...`, without the start-up.


def test_stats_rejects_audio_that_does_not_decode(damaged_corpus, capsys):
    """What prepare rejects, stats rejects too: a one-line error naming the first bad file."""
    root, bad = damaged_corpus
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "stats", str(root)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(f"error: {bad[0]}: not a readable audio file"), err
    assert len(err.strip().splitlines()) == 1


def test_stats_lists_every_skipped_file_and_writes_the_report(
    damaged_corpus, tmp_path, capsys, caplog
):
    root, bad = damaged_corpus
    report = tmp_path / "reports" / "skipped.tsv"
    main(["data", "stats", str(root), "--on_error", "skip", "--skipped_report", str(report)])
    out = capsys.readouterr().out
    assert "skipped 2 bad file(s)" in caplog.text and "skipped 2 bad file(s)" in out
    for path in bad:  # in the warning and in the stats, each on one line
        assert str(path) in caplog.text and f"  {path}: not a readable audio file" in out
    rows = skipped_rows(report)
    assert [r["path"] for r in rows] == [str(p) for p in bad]
    assert all(r["line"] == "" and r["reason"].startswith("not a readable audio") for r in rows)


def test_prepare_lists_every_skipped_file_beside_the_cache(damaged_corpus, tmp_path, capsys):
    root, bad = damaged_corpus
    main(["data", "prepare", str(root), "--on_error", "skip", "--cache_dir", str(tmp_path)])
    out = capsys.readouterr().out.replace("\n", "")
    (report,) = tmp_path.glob("*/skipped.tsv")
    assert [r["path"] for r in skipped_rows(report)] == [str(p) for p in bad]
    assert f"skipped 2 bad file(s), listed in {report}" in out
    for path in bad:
        assert str(path) in out


# ------------------------------------------------------------------ docs of the embedded corpus

REPO = Path(__file__).resolve().parents[1]


def _squash(text: str) -> str:
    return " ".join(text.split())


def _code_block_after(text: str, marker: str) -> list[str]:
    start = text.index("```", text.index(marker)) + 3
    return [line for line in text[start : text.index("```", start)].splitlines() if line.strip()]


def _table_rows(text: str, header: str) -> dict[str, list[str]]:
    """First cell -> the other cells, of the Markdown table under the row ``header``."""
    lines = text[text.index(header) :].splitlines()
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_docs_state_what_convae_data_stats_prints():
    """README's embedded-corpus table and docs/corpus.md's numbers are what `convae data stats`
    prints (corpus_stats + print_stats, the command's two steps): they cannot drift apart."""
    stats = corpus_stats(embedded_corpus_root())
    console = Console(file=io.StringIO(), width=200)
    print_stats(stats, console)
    printed = _squash(console.file.getvalue())
    splits = stats["splits"]
    corpus_md = (REPO / "docs" / "corpus.md").read_text()
    for line in _code_block_after(corpus_md, "`convae data stats` (no ROOT)"):
        assert _squash(line) in printed, f"docs/corpus.md says {line!r}; stats prints otherwise"
    per_class = {c: sum(s["phones_per_class_48"][c] for s in splits.values()) for c in PHONES_48}
    documented = {}
    for cells in _table_rows(corpus_md, "| class | all | class | all |").items():
        flat = [cells[0], *cells[1]]
        documented.update(zip(flat[0::2], flat[1::2], strict=True))
    documented.pop("", None)
    assert {c: int(n) for c, n in documented.items()} == {c: n for c, n in per_class.items() if n}
    missing = ", ".join(splits["train"]["missing_classes_48"])
    assert f"Classes missing: {missing}." in corpus_md
    total = sum(s["utterances"] for s in splits.values())
    phones = sum(s["phones"] for s in splits.values())
    assert f"{total} utterances, {phones:,} phones" in corpus_md

    readme = (REPO / "README.md").read_text()
    rows = _table_rows(readme, "| | train | val | test |")
    names = {"speakers": "speakers", "utterances": "utterances", "phones": "phones"}
    names["kept after discarding the longest 5%"] = "kept"
    for row, key in names.items():
        assert rows[row] == [f"{splits[s][key]:,}" for s in ("train", "val", "test")], row
    shape = " x ".join(str(n) for n in stats["padding"]["patch_shape"])
    assert f"patches are {shape}." in readme
    assert f"{len(PHONES_48) - len(splits['train']['missing_classes_48'])} of the 48" in readme
    assert f"(missing: {missing})" in readme
