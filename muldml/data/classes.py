"""Canonical expression classes: every reader, predict and export name classes with these.

The names are the paper's nouns. Datasets and people spell them otherwise; `ALIASES` lists
the spellings read as each (case and surrounding spaces ignored):

    anger      angry
    disgust    disgusted
    fear       fearful, afraid, scared
    happiness  happy, joy
    sadness    sad
    surprise   surprised
    neutral    (none)
    contempt   contemptuous
"""
from __future__ import annotations

from collections.abc import Iterable

__all__ = ["EXPRESSIONS", "CANONICAL_CLASSES", "ALIASES", "canonical_label", "canonical_order"]

#: The 7 basic expressions, in the order the built-in demo and most 7-class sets use.
EXPRESSIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
#: Every name a loader may emit (CK+ and 8-class AffectNet add contempt).
CANONICAL_CLASSES = EXPRESSIONS + ("contempt",)
#: Other spellings of each canonical class.
ALIASES: dict[str, tuple[str, ...]] = {
    "anger": ("angry",),
    "disgust": ("disgusted",),
    "fear": ("fearful", "afraid", "scared"),
    "happiness": ("happy", "joy"),
    "sadness": ("sad",),
    "surprise": ("surprised",),
    "neutral": (),
    "contempt": ("contemptuous",),
}
_SPELLINGS = {spelling: name for name in CANONICAL_CLASSES for spelling in (name, *ALIASES[name])}


def canonical_label(name: str) -> str | None:
    """The canonical class a spelling stands for, ignoring case ("Happy" → "happiness"); None if unknown."""
    return _SPELLINGS.get(name.strip().lower())


def canonical_order(present: Iterable[str]) -> list[str]:
    """The canonical classes among ``present`` in the order of `CANONICAL_CLASSES`, then any
    other names, sorted."""
    present = set(present)
    known = [name for name in CANONICAL_CLASSES if name in present]
    return known + sorted(present - set(known))
