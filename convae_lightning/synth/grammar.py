"""The seeded grammar that writes the prompts: word categories and sentence templates.

Nothing is copied from TIMIT's prompts; ``festival/words.txt`` chooses words for phonetic coverage
(rare classes such as zh, oy, aw, uh occur in many words) and ``festival/templates.txt`` makes
statements, questions and comma phrases (which make Festival pause).
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

#: The shipped word list, templates and Festival helpers.
FESTIVAL_DATA = resources.files("convae_lightning.synth") / "festival"


@dataclass(frozen=True)
class Grammar:
    """Word categories and sentence templates that generate the prompts reproducibly."""

    words: dict[str, tuple[str, ...]]
    templates: tuple[str, ...]

    @classmethod
    def load(
        cls, word_list: str | os.PathLike | None = None, templates: str | os.PathLike | None = None
    ) -> Grammar:
        """Read a word list (``category: word word ...`` lines) and templates (``{category}``).

        Args:
            word_list: file in ``festival/words.txt``'s format; ``None`` for the shipped one.
            templates: file in ``festival/templates.txt``'s format; ``None`` for the shipped one.

        Raises:
            ValueError: if the word list has no words, a line is malformed, or a template uses a
                category that the word list lacks.
            FileNotFoundError: if a file does not exist.
        """
        where = str(word_list or "festival/words.txt")
        words = _parse_words(_read(word_list, "words.txt"), where)
        lines = [t.split("#", 1)[0].strip() for t in _read(templates, "templates.txt").splitlines()]
        template_list = tuple(t for t in lines if t)
        if not template_list:
            raise ValueError(f"templates {templates or 'festival/templates.txt'} are empty")
        for template in template_list:
            for _, field, _, _ in string.Formatter().parse(template):
                if field is not None and field not in words:
                    raise ValueError(
                        f"template {template!r} uses category {{{field}}}, which word list "
                        f"{where} lacks (it has: {', '.join(sorted(words))})"
                    )
        return cls(words, template_list)

    def sentence(self, seed: int, prompt: int) -> str:
        """The text of prompt number ``prompt``; depends only on (seed, prompt, the grammar)."""
        rng = np.random.default_rng([seed, prompt, 0x5E47])
        template = self.templates[int(rng.integers(len(self.templates)))]
        parts: list[str] = []
        for literal, field, _, _ in string.Formatter().parse(template):
            parts.append(literal)
            if field is not None:
                choices = self.words[field]
                parts.append(choices[int(rng.integers(len(choices)))])
        text = "".join(parts)
        return text[0].upper() + text[1:]

    def digest(self) -> str:
        """A short hash of the grammar (a resumed synthesis must use the same one)."""
        blob = json.dumps([self.words, self.templates], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _read(path: str | os.PathLike | None, shipped: str) -> str:
    return Path(path).read_text() if path else (FESTIVAL_DATA / shipped).read_text()


def _parse_words(text: str, where: str) -> dict[str, tuple[str, ...]]:
    """``category: word word ...`` lines (``#`` starts a comment) to a category -> words map."""
    words: dict[str, tuple[str, ...]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        category, sep, rest = line.partition(":")
        if not sep or not category.strip().isidentifier():
            raise ValueError(f"{where}:{number}: expected 'category: word word ...', got {raw!r}")
        entries = tuple(w for w in rest.split() if w)
        bad = [w for w in entries if not w.replace("'", "").replace("-", "").isalpha()]
        if bad:
            raise ValueError(f"{where}:{number}: words must be letters only, got {bad}")
        if entries:
            words[category.strip()] = entries
    if not words:
        raise ValueError(f"word list {where} contains no words")
    return words


__all__ = ["FESTIVAL_DATA", "Grammar"]
