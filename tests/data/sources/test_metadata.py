"""Every reader ignores operating-system metadata and hidden files, as an archive unpacked
on a Mac or browsed on Windows leaves them: ``._<name>`` beside every file, ``.DS_Store``,
``Thumbs.db``, ``desktop.ini``, a ``__MACOSX/`` tree, hidden images."""
import shutil

import pytest
from source_layouts import LAYOUTS, face, text_file

from muldml.data.sources import LOADERS, load_source

RESOURCE_FORK = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "  # AppleDouble header: not an image


def add_os_metadata(root):
    """Litter ``root`` the way macOS and Windows do."""
    files = [p for p in root.rglob("*") if p.is_file()]
    folders = [root] + [p for p in root.rglob("*") if p.is_dir()]
    for path in files:
        (path.parent / f"._{path.name}").write_bytes(RESOURCE_FORK)
        mirror = root / "__MACOSX" / path.relative_to(root).parent / f"._{path.name}"
        mirror.parent.mkdir(parents=True, exist_ok=True)
        mirror.write_bytes(RESOURCE_FORK)
    for folder in folders:
        text_file(folder / ".DS_Store", "\x00\x00\x00\x01Bud1")
        text_file(folder / "Thumbs.db", "thumbnails")
        text_file(folder / "desktop.ini", "[.ShellClassInfo]")
        face(24).save(folder / ".hidden.png")  # a real image, but hidden


def _read(name, root, options):
    data = load_source(name, root, **options)
    return ([(i.key, i.label, i.subject, i.split, i.skip_reason) for i in data.items], data.classes, data.warnings)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_reader_ignores_os_metadata_and_hidden_files(tmp_path, name):
    build, options = LAYOUTS[name]
    clean = build(tmp_path / "clean")
    expected = _read(name, clean, options)
    assert any(label for _, label, *_ in expected[0])  # the layout has labelled images to lose
    littered = tmp_path / "littered"
    shutil.copytree(clean, littered)
    add_os_metadata(littered)
    assert _read(name, littered, options) == expected


def test_every_reader_has_a_layout_here():
    assert set(LAYOUTS) == set(LOADERS)


def test_ck_plus_unpacked_on_a_mac_keeps_every_labelled_sequence(tmp_path):
    # The archive unpacked on a Mac: "._S005_001_00000005_emotion.txt" beside each emotion file
    # made two emotion files per sequence, and every labelled sequence was dropped.
    build, _ = LAYOUTS["ck+"]
    root = build(tmp_path)
    for emotion in list((root / "Emotion").rglob("*_emotion.txt")):
        (emotion.parent / f"._{emotion.name}").write_bytes(RESOURCE_FORK)
    data = load_source("ck+", root)
    assert sum(item.label is not None for item in data.items) == 6  # two labelled sequences × three frames
    assert not any("emotion files" in line for line in data.warnings)
