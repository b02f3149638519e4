"""The shared types of the readers: one source image (`RawItem`) and a dataset as read (`SourceDataset`)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class RawItem:
    """One source image.

    ``key`` is a stable unique id: the image's path relative to the dataset root (with
    ``/``), or ``fer2013.csv#row=<i>`` for images stored in a table. ``load`` opens the
    image lazily and may raise. ``label`` is a class name, None exactly when
    ``skip_reason`` says why the image is not used. ``split`` is "train", "val" or
    "test" where the dataset has an official split.
    """

    key: str
    load: Callable[[], Image.Image]
    label: str | None
    subject: str | None = None
    split: str | None = None
    skip_reason: str | None = None

    def __post_init__(self) -> None:
        if (self.label is None) == (self.skip_reason is None):
            raise ValueError(f"{self.key}: an item has either a label or a skip_reason")


@dataclass
class SourceDataset:
    """A dataset as read: its registry name, class names in order, items and label problems."""

    name: str
    classes: list[str]
    items: list[RawItem]
    warnings: list[str]
