"""The registry of readers: dataset name → loader, and `load_source`, which checks the options."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from muldml.data.sources.affectnet import load_affectnet
from muldml.data.sources.ck_plus import load_ck_plus, load_ck_plus_folders
from muldml.data.sources.fer2013 import load_fer2013, load_ferplus
from muldml.data.sources.folder import load_folder
from muldml.data.sources.items import SourceDataset
from muldml.data.sources.jaffe import load_jaffe
from muldml.data.sources.mmi import load_mmi
from muldml.data.sources.raf_db import load_raf_db
from muldml.data.sources.sfew import load_sfew
from muldml.errors import UserError


LOADERS: dict[str, Callable[..., SourceDataset]] = {
    "ck+": load_ck_plus,
    "ck+-folders": load_ck_plus_folders,
    "mmi": load_mmi,
    "sfew": load_sfew,
    "raf-db": load_raf_db,
    "fer2013": load_fer2013,
    "ferplus": load_ferplus,
    "affectnet": load_affectnet,
    "jaffe": load_jaffe,
    "folder": load_folder,
}


def load_source(name: str, root: str | Path, **options) -> SourceDataset:
    """Read dataset ``name`` (a key of `LOADERS`, any case) from ``root``, passing ``options`` to its loader.

    Raises UserError for an unknown name or option, a missing root or a missing label file.
    """
    loader = LOADERS.get(name.strip().lower())
    if loader is None:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(LOADERS)}")
    signature = inspect.signature(loader)
    try:
        signature.bind(root, **options)
    except TypeError:
        accepted = ", ".join(list(signature.parameters)[1:]) or "none"
        raise UserError(f"dataset {name!r} takes the options {accepted}; got {', '.join(options)}") from None
    return loader(root, **options)
