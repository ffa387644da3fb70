"""``convae data stats|prepare ROOT`` run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convae_lightning.data.phones import PHONES_39, PHONES_48
from convae_lightning.data.toy import write_toy_corpus


@pytest.fixture(scope="module")
def cli_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "TIMIT"
    return write_toy_corpus(root, {"TRAIN": 3, "TEST": 1}, sentences=2, phones_per_sentence=12)


def convae(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONVAE_CACHE_DIR": str(cache), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "convae_lightning.cli", "data", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_stats_tables(cli_corpus, tmp_path):
    result = convae("stats", str(cli_corpus), cache=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for word in ("utterances", "speakers", "phones", "discarded", "Phones per class (48 classes)",
                 "Phones per class (39 classes)", "missing classes"):
        assert word in out, word
    assert str(cli_corpus) in out.replace("\n", "")
    assert not list(tmp_path.iterdir())  # stats builds no cache


def test_stats_json_counts(cli_corpus, tmp_path):
    result = convae("stats", str(cli_corpus), "--json_output", "true", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
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


def test_prepare_builds_the_cache(cli_corpus, tmp_path):
    cache = tmp_path / "explicit"
    result = convae("prepare", str(cli_corpus), "--cache_dir", str(cache), cache=tmp_path / "env")
    assert result.returncode == 0, result.stderr
    built = list(cache.glob("*/meta.json"))
    assert len(built) == 1
    assert not (tmp_path / "env").exists()  # --cache_dir wins over $CONVAE_CACHE_DIR
    meta = json.loads(built[0].read_text())
    out = result.stdout
    assert "patch shape (C, F, T)" in out and "discarded" in out and "speakers" in out
    for split in ("train", "val", "test"):
        assert f"{split}: {meta['kept'][split]} phones kept, {meta['discarded'][split]} discarded" in out


def test_bad_root_exits_non_zero_naming_the_path(tmp_path):
    missing = tmp_path / "no_such_corpus"
    result = convae("stats", str(missing), cache=tmp_path)
    assert result.returncode != 0
    assert str(missing) in result.stderr
