"""TIMIT phone sets and the Lee & Hon (1989) foldings (thesis 2.1).

The 61 TIMIT labels are mapped onto 48 training classes (glottal stops ``q`` are deleted);
for scoring, the 48 classes are folded further onto 39, within-group confusions not counting
as errors.
"""

from __future__ import annotations

PHONES_61: tuple[str, ...] = (
    "aa", "ae", "ah", "ao", "aw", "ax", "ax-h", "axr", "ay", "b", "bcl", "ch", "d", "dcl",
    "dh", "dx", "eh", "el", "em", "en", "eng", "epi", "er", "ey", "f", "g", "gcl", "h#",
    "hh", "hv", "ih", "ix", "iy", "jh", "k", "kcl", "l", "m", "n", "ng", "nx", "ow", "oy",
    "p", "pau", "pcl", "q", "r", "s", "sh", "t", "tcl", "th", "uh", "uw", "ux", "v", "w",
    "y", "z", "zh",
)  # fmt: skip

PHONES_48: tuple[str, ...] = (
    "aa", "ae", "ah", "ao", "aw", "ax", "ay", "b", "ch", "cl", "d", "dh", "dx", "eh", "el",
    "en", "epi", "er", "ey", "f", "g", "hh", "ih", "ix", "iy", "jh", "k", "l", "m", "n",
    "ng", "ow", "oy", "p", "r", "s", "sh", "sil", "t", "th", "uh", "uw", "v", "vcl", "w",
    "y", "z", "zh",
)  # fmt: skip

# 61 -> 48 (Lee & Hon 1989, table 1). ``None`` deletes the segment (glottal stop).
MAP_61_TO_48: dict[str, str | None] = {p: p for p in PHONES_61 if p in PHONES_48}
MAP_61_TO_48.update(
    {
        "ax-h": "ax",
        "axr": "er",
        "em": "m",
        "nx": "n",
        "eng": "ng",
        "hv": "hh",
        "ux": "uw",
        "pcl": "cl",
        "tcl": "cl",
        "kcl": "cl",
        "bcl": "vcl",
        "dcl": "vcl",
        "gcl": "vcl",
        "h#": "sil",
        "pau": "sil",
        "q": None,
    }
)

# 48 -> 39 folding used for scoring (Lee & Hon 1989): within-group confusions are not errors.
MAP_48_TO_39: dict[str, str] = {p: p for p in PHONES_48}
MAP_48_TO_39.update(
    {
        "ao": "aa",
        "ax": "ah",
        "ix": "ih",
        "el": "l",
        "en": "n",
        "zh": "sh",
        "cl": "sil",
        "vcl": "sil",
        "epi": "sil",
    }
)

PHONES_39: tuple[str, ...] = tuple(sorted(set(MAP_48_TO_39.values())))

CLASS_INDEX_48: dict[str, int] = {p: i for i, p in enumerate(PHONES_48)}

#: ``FOLD_48_TO_39[i]`` is the 39-class index of 48-class index ``i`` (for torch indexing).
FOLD_48_TO_39: tuple[int, ...] = tuple(PHONES_39.index(MAP_48_TO_39[p]) for p in PHONES_48)


def map_label(label: str) -> str | None:
    """Map a TIMIT label (61 set, any case) to its 48-class label; ``None`` for deleted ones.

    Raises:
        KeyError: if ``label`` is not one of the 61 TIMIT labels.
    """
    return MAP_61_TO_48[label.lower()]


__all__ = [
    "CLASS_INDEX_48",
    "FOLD_48_TO_39",
    "MAP_48_TO_39",
    "MAP_61_TO_48",
    "PHONES_39",
    "PHONES_48",
    "PHONES_61",
    "map_label",
]
