"""Which entries of a dataset folder are data: one rule for every reader.

Operating-system metadata (macOS ``._*`` resource forks, ``.DS_Store`` and ``__MACOSX/``,
Windows ``Thumbs.db`` and ``desktop.ini``) and hidden entries (names starting with ``.``)
are never data. Image files are those whose extension a format Pillow can open claims
(``.jfif``, ``.jpe``, ``.gif``, ``.tga``, … as well as ``.png`` and ``.jpg``); stub formats and
MPEG video, which Pillow identifies but cannot decode, are not.
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

from PIL import Image, ImageFile

__all__ = ["IMAGE_SUFFIXES", "is_metadata", "is_image_file", "natural_key", "visible_files", "visible_folders",
           "image_files"]

OS_METADATA = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "__macosx", "icon\r"})
_IDENTIFIED_ONLY = frozenset({"MPEG"})  # Pillow reads its header, not its frames


def _readable_suffixes() -> frozenset[str]:
    Image.init()
    readable = set()
    for suffix, fmt in Image.registered_extensions().items():
        opener = Image.OPEN.get(fmt, (None,))[0]
        stub = inspect.isclass(opener) and issubclass(opener, ImageFile.StubImageFile)
        if opener is not None and not stub and fmt not in _IDENTIFIED_ONLY:
            readable.add(suffix.lower())
    return frozenset(readable)


#: Lower-case extensions (with the dot) of the image formats Pillow decodes.
IMAGE_SUFFIXES = _readable_suffixes()


def is_metadata(path: str | Path) -> bool:
    """Whether an entry is operating-system metadata or hidden, by its name alone."""
    name = Path(path).name
    return name.startswith(".") or name.lower() in OS_METADATA


def is_image_file(path: str | Path) -> bool:
    """Whether a file's extension is one Pillow decodes (see `IMAGE_SUFFIXES`)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def natural_key(text: str) -> tuple:
    """Digits compare as numbers: frame2 before frame10, row=9 before row=10."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text)))


def visible_files(folder: Path) -> list[Path]:
    """Regular files directly in ``folder`` that are not metadata (none if it is missing), natural order."""
    if not folder.is_dir():
        return []
    files = (p for p in folder.iterdir() if not is_metadata(p) and p.is_file())
    return sorted(files, key=lambda p: natural_key(p.name))


def visible_folders(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` that are not metadata, natural order."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if not is_metadata(p) and p.is_dir()), key=lambda p: natural_key(p.name))


def image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(images, others): the non-metadata files directly in ``folder``, split by `is_image_file`."""
    files = visible_files(folder)
    return [p for p in files if is_image_file(p)], [p for p in files if not is_image_file(p)]
