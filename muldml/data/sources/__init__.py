"""Readers for the FER datasets in the layouts they are distributed in; one module per dataset.

Each loader turns one dataset's files and label conventions into a `SourceDataset`: one
`RawItem` per source image, with its label mapped onto the canonical class names of
`muldml.data.classes`, its subject and its official split. An image whose label cannot
be used is still listed, with ``label=None`` and a ``skip_reason``, so that it can be
counted; so is a file in an image folder that is not an image Pillow reads. Label data
that is wrong (malformed, out of range, a listed file that is not there) also adds one
line to ``warnings``; images a dataset's protocol leaves out on purpose (AffectNet's
"none", FERPlus ties, contempt in 7-class AffectNet) only get their ``skip_reason``, as
they are many and expected. Operating-system metadata and hidden files (``._*``,
``.DS_Store``, ``Thumbs.db``, ``__MACOSX/``) are ignored by every reader
(`muldml.data.files`).

Every class list follows one rule: the order of `CANONICAL_CLASSES` (anger, disgust,
fear, happiness, sadness, surprise, neutral, then contempt), keeping the classes the
dataset (or the chosen variant of it) has. Items come sorted by key, numbers compared as
numbers, so ``row=9`` precedes ``row=10``.

Registry (`LOADERS`, read through `load_source`): "ck+", "ck+-folders" (ck_plus.py),
"mmi", "sfew", "raf-db", "fer2013", "ferplus" (fer2013.py), "affectnet", "jaffe", "folder".
"""
from muldml.data.sources.common import canonical_label
from muldml.data.sources.items import RawItem, SourceDataset
from muldml.data.sources.registry import LOADERS, load_source

__all__ = ["RawItem", "SourceDataset", "LOADERS", "load_source", "canonical_label"]
