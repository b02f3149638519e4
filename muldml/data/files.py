"""Which entries of a dataset folder are data: one rule for every reader.

Operating-system metadata (macOS ``._*`` resource forks, ``.DS_Store`` and ``__MACOSX/``,
Windows ``Thumbs.db`` and ``desktop.ini``) and hidden entries (names starting with ``.``)
are never data. Image files are those whose extension a format Pillow can open claims
(``.jfif``, ``.jpe``, ``.gif``, ``.tga``, … as well as ``.png`` and ``.jpg``); stub formats and
MPEG video, which Pillow identifies but cannot decode, are not.

Links: a walk enters each real folder once and lists each real file once (`walk`), so a
link back up (``sub/again -> ..``) or a second link to a folder already walked adds
nothing. A command's own output folder is never read as input: listings made inside
`leaving_out` do not see it.
"""
from __future__ import annotations

import contextlib
import fnmatch
import glob
import inspect
import os
import re
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from PIL import Image, ImageFile

__all__ = ["IMAGE_SUFFIXES", "is_metadata", "is_image_file", "natural_key", "visible_files", "visible_folders",
           "image_files", "identity", "leaving_out", "is_left_out", "walk", "glob_paths"]

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


def identity(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) of the real file or folder ``path`` leads to, links followed; None if none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


_LEFT_OUT: ContextVar[frozenset] = ContextVar("left_out", default=frozenset())


@contextlib.contextmanager
def leaving_out(*folders: str | Path | None) -> Iterator[None]:
    """Listings made inside this block never see ``folders`` (those that exist) or anything
    below them: what a command writes is not read back as its input."""
    ids = {identity(f) for f in folders if f is not None} - {None}
    token = _LEFT_OUT.set(_LEFT_OUT.get() | ids)
    try:
        yield
    finally:
        _LEFT_OUT.reset(token)


def is_left_out(path: str | Path) -> bool:
    """Whether ``path`` is, or lies inside, a folder left out by `leaving_out`."""
    left_out = _LEFT_OUT.get()
    if not left_out:
        return False
    path = Path(path).resolve()
    return any(identity(p) in left_out for p in (path, *path.parents))


def visible_files(folder: Path) -> list[Path]:
    """Regular files directly in ``folder`` that are not metadata (none if it is missing or
    left out), natural order."""
    if not folder.is_dir() or is_left_out(folder):
        return []
    files = (p for p in folder.iterdir() if not is_metadata(p) and p.is_file())
    return sorted(files, key=lambda p: natural_key(p.name))


def visible_folders(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` that are not metadata nor left out, natural order."""
    if not folder.is_dir() or is_left_out(folder):
        return []
    left_out = _LEFT_OUT.get()
    folders = (p for p in folder.iterdir()
               if not is_metadata(p) and p.is_dir() and not (left_out and identity(p) in left_out))
    return sorted(folders, key=lambda p: natural_key(p.name))


def image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(images, others): the non-metadata files directly in ``folder``, split by `is_image_file`."""
    files = visible_files(folder)
    return [p for p in files if is_image_file(p)], [p for p in files if not is_image_file(p)]


def walk(folder: Path, seen: set | None = None) -> Iterator[tuple[Path, list[Path], list[Path]]]:
    """(folder, images, others) for ``folder`` and every folder below it, depth first in
    natural order, as `image_files` lists them.

    Each real folder is entered once and each real file listed once (by `identity`), so
    links back up the tree or to a folder already walked add nothing; left-out folders are
    not entered. ``seen``: identities already visited, shared between walks (and updated).
    """
    seen = set() if seen is None else seen
    here = identity(folder)
    if here is None or here in seen:
        return
    seen.add(here)
    images, others = image_files(folder)
    first = set()
    for path in images + others:
        real = identity(path)
        if real not in seen:
            seen.add(real)
            first.add(path)
    yield folder, [p for p in images if p in first], [p for p in others if p in first]
    for sub in visible_folders(folder):
        yield from walk(sub, seen)


def glob_paths(pattern: str) -> list[Path]:
    """The paths a glob pattern matches, in natural order.

    ``**`` is matched by a `walk` below the part before it, not by `glob.glob`, whose ``**``
    follows links into loops (about 40 levels deep for each loop, and multiplying with
    each further loop): each real folder is entered once, and only files are matched,
    metadata and left-out folders excluded; a file matched under two names is given once.
    """
    if "**" not in pattern:
        return sorted(map(Path, glob.glob(pattern)), key=lambda p: natural_key(str(p)))
    head = pattern.split("**", 1)[0]
    bases = glob.glob(head) if glob.has_magic(head) else [head or "."]
    # "a/**/b" also matches "a/b"; fnmatch's "*" crosses "/", which covers the other depths.
    patterns = {os.path.normpath(pattern), os.path.normpath(pattern.replace("**" + os.sep, ""))}
    found, folders, files = [], set(), set()
    for base in bases:
        for folder, _, _ in walk(Path(base), folders):
            for path in sum(image_files(folder), []):
                if identity(path) not in files and any(fnmatch.fnmatchcase(os.path.normpath(path), q) for q in patterns):
                    files.add(identity(path))
                    found.append(path)
    return sorted(found, key=lambda p: natural_key(str(p)))
