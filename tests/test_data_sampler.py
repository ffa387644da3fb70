"""StratifiedResampler: exact per-class counts, per-epoch reshuffling, DDP shares (thesis 3.1)."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest

from convae_lightning.data.sampler import StratifiedResampler


def test_small_class_is_repeated_whole_then_topped_up():
    labels = np.zeros(60, dtype=np.int64)  # 60 examples, 500 slots
    draw = list(StratifiedResampler(labels, per_class=500, seed=3))
    assert len(draw) == 500
    uses = Counter(draw)
    assert set(uses) == set(range(60))
    assert sorted(Counter(uses.values()).items()) == [(8, 40), (9, 20)]


def test_large_class_is_subsampled_without_replacement():
    labels = np.array([0] * 1000 + [1] * 7)
    draw = np.array(list(StratifiedResampler(labels, per_class=300)))
    class0 = draw[labels[draw] == 0]
    assert len(class0) == 300 and len(set(class0.tolist())) == 300
    assert np.bincount(labels[draw]).tolist() == [300, 300]


@pytest.mark.parametrize("per_class", [1, 5, 200, 500])
def test_exact_counts_per_class(per_class):
    rng = np.random.default_rng(0)
    labels = rng.choice(6, size=400, p=[0.5, 0.2, 0.15, 0.1, 0.04, 0.01])
    sampler = StratifiedResampler(labels, per_class=per_class, seed=1)
    draw = np.array(list(sampler))
    assert len(draw) == len(sampler) == 6 * per_class
    assert np.bincount(labels[draw], minlength=6).tolist() == [per_class] * 6


def test_reshuffled_per_epoch_and_reproducible():
    labels = np.repeat(np.arange(4), [50, 30, 10, 3])
    a = StratifiedResampler(labels, per_class=20, seed=7)
    b = StratifiedResampler(labels, per_class=20, seed=7)
    epochs = []
    for epoch in range(3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        draw = list(a)
        assert draw == list(b)  # same seed and epoch: same draw
        epochs.append(draw)
    assert epochs[0] != epochs[1] != epochs[2]
    assert sorted(epochs[0]) != sorted(epochs[1])  # a new subsample, not only a new order
    a.set_epoch(0)
    assert list(a) == epochs[0]
    c = StratifiedResampler(labels, per_class=20, seed=8)
    assert list(c) != epochs[0]


def test_an_evaluation_draw_stays_the_same_every_epoch():
    """Validation after epoch 3 and ``convae validate`` of that checkpoint see the same phones."""
    labels = np.repeat(np.arange(4), 50)
    fixed = StratifiedResampler(labels, per_class=10, seed=1, resample=False)
    first = list(fixed)
    fixed.set_epoch(3)
    assert list(fixed) == first
    training = StratifiedResampler(labels, per_class=10, seed=1)
    training.set_epoch(3)
    assert list(training) != first


@pytest.mark.parametrize("per_class", [10, 11])
def test_ddp_rank_shares_are_disjoint_and_cover_the_draw(per_class):
    labels = np.repeat(np.arange(3), [40, 9, 25])
    shares = [
        list(StratifiedResampler(labels, per_class, seed=2, num_replicas=2, rank=r)) for r in (0, 1)
    ]
    full = StratifiedResampler(labels, per_class, seed=2, num_replicas=1, rank=0).draw().tolist()
    total = 3 * per_class
    assert len(shares[0]) == len(shares[1]) == -(-total // 2)
    # Position-wise the ranks split the epoch's draw: interleaving them gives the draw back.
    interleaved = [x for pair in zip(*shares, strict=True) for x in pair]
    assert interleaved[:total] == full
    if total % 2 == 0:
        assert Counter(shares[0]) + Counter(shares[1]) == Counter(full)
    # Without repeats in the draw the shares are disjoint as sets too.
    single = list(StratifiedResampler(np.arange(30) % 3, 10, seed=2, num_replicas=2, rank=0))
    other = list(StratifiedResampler(np.arange(30) % 3, 10, seed=2, num_replicas=2, rank=1))
    assert not set(single) & set(other) and sorted(single + other) == list(range(30))


def test_missing_class_is_reported_and_left_out(caplog):
    labels = np.array([0, 0, 2, 2, 2])
    with caplog.at_level(logging.WARNING, logger="convae_lightning.data.sampler"):
        sampler = StratifiedResampler(
            labels, per_class=4, num_classes=4, class_names=["aa", "ae", "ah", "ao"]
        )
    assert sampler.missing_classes == [1, 3]
    assert "2 class(es) have no examples" in caplog.text and "ae, ao" in caplog.text
    draw = np.array(list(sampler))
    assert np.bincount(labels[draw]).tolist() == [4, 0, 4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_class": 0}, "per_class must be a positive integer, got 0"),
        ({"per_class": -5}, "per_class must be a positive integer, got -5"),
        ({"per_class": 3, "labels": []}, "labels is empty"),
        ({"per_class": 3, "num_replicas": 2, "rank": 2}, r"rank must be in \[0, 2\), got 2"),
    ],
)
def test_bad_arguments(kwargs, message):
    kwargs = {"labels": [0, 1, 1], **kwargs}
    with pytest.raises(ValueError, match=message):
        StratifiedResampler(**kwargs)
