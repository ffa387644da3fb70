"""TIMIT phone sets and the Lee & Hon 61 -> 48 -> 39 foldings (thesis 2.1)."""

from __future__ import annotations

import pytest

from convae_lightning.data.phones import (
    CLASS_INDEX_48,
    FOLD_48_TO_39,
    MAP_48_TO_39,
    MAP_61_TO_48,
    PHONES_39,
    PHONES_48,
    PHONES_61,
    map_label,
)


def test_set_sizes():
    assert len(PHONES_61) == len(set(PHONES_61)) == 61
    assert len(PHONES_48) == len(set(PHONES_48)) == 48
    assert len(PHONES_39) == 39
    assert set(MAP_61_TO_48) == set(PHONES_61)
    assert set(MAP_48_TO_39) == set(PHONES_48)


def test_61_to_48_covers_48_and_deletes_only_q():
    targets = {v for v in MAP_61_TO_48.values() if v is not None}
    assert targets == set(PHONES_48)
    assert [p for p, v in MAP_61_TO_48.items() if v is None] == ["q"]


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("ax-h", "ax"),
        ("axr", "er"),
        ("em", "m"),
        ("nx", "n"),
        ("eng", "ng"),
        ("hv", "hh"),
        ("ux", "uw"),
        ("pcl", "cl"),
        ("tcl", "cl"),
        ("kcl", "cl"),
        ("bcl", "vcl"),
        ("dcl", "vcl"),
        ("gcl", "vcl"),
        ("h#", "sil"),
        ("pau", "sil"),
        ("epi", "epi"),
        ("aa", "aa"),
        ("zh", "zh"),
        ("q", None),
    ],
)
def test_map_61_to_48(label, expected):
    assert MAP_61_TO_48[label] == expected
    assert map_label(label.upper()) == expected  # any case


# Lee & Hon (1989): the 39-class scoring groups that hold more than one of the 48 classes.
LEE_HON_GROUPS = [
    {"aa", "ao"},
    {"ah", "ax"},
    {"ih", "ix"},
    {"l", "el"},
    {"n", "en"},
    {"sh", "zh"},
    {"sil", "cl", "vcl", "epi"},
]


def test_48_to_39_groups_are_lee_hon():
    groups: dict[str, set[str]] = {}
    for p48, p39 in MAP_48_TO_39.items():
        groups.setdefault(p39, set()).add(p48)
    assert sorted(map(sorted, (g for g in groups.values() if len(g) > 1))) == sorted(
        map(sorted, LEE_HON_GROUPS)
    )
    assert MAP_48_TO_39["zh"] == "sh"
    for closure in ("cl", "vcl", "epi"):
        assert MAP_48_TO_39[closure] == "sil"
    assert set(MAP_48_TO_39.values()) == set(PHONES_39)


def test_class_index_and_fold_tensor_agree():
    assert [CLASS_INDEX_48[p] for p in PHONES_48] == list(range(48))
    assert len(FOLD_48_TO_39) == 48
    for i, p in enumerate(PHONES_48):
        assert PHONES_39[FOLD_48_TO_39[i]] == MAP_48_TO_39[p]


@pytest.mark.parametrize("label", ["xx", "", "sil", "cl"])  # 48-set names are not 61 labels
def test_unknown_label_raises(label):
    with pytest.raises(KeyError):
        map_label(label)
