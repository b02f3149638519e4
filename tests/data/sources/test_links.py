"""Every reader takes each real file once: link loops add nothing, and a second name for a
file (a link beside it) is counted as skipped, never read twice."""
import os

import pytest
from source_layouts import LAYOUTS

from muldml.data.files import identity
from muldml.data.sources import load_source


def _read(name, root, options):
    return [(i.key, i.label, i.subject, i.split, i.skip_reason) for i in load_source(name, root, **options).items]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_link_loops_change_nothing(tmp_path, name):
    build, options = LAYOUTS[name]
    expected = _read(name, build(tmp_path / "clean"), options)
    root = build(tmp_path / "looped")
    for folder in [root] + [p for p in root.rglob("*") if p.is_dir()]:
        (folder / "again").symlink_to(os.path.relpath(root, folder))  # back up to the root
    assert _read(name, root, options) == expected


@pytest.mark.parametrize("name", ["folder", "ck+-folders", "sfew"])
def test_a_second_name_for_a_file_is_skipped_not_read_again(tmp_path, name):
    build, options = LAYOUTS[name]
    root = build(tmp_path / "d")
    clean = {key: label for key, label, *_ in _read(name, root, options) if label}
    for key in clean:
        path = root / key
        (path.parent / f"zz_{path.name}").symlink_to(path.name)
    items = load_source(name, root, **options).items
    labelled = [item for item in items if item.label]
    assert {item.key: item.label for item in labelled} == clean
    assert len({identity(root / item.key) for item in labelled}) == len(labelled)
    links = [item for item in items if item.key.rsplit("/", 1)[-1].startswith("zz_")]
    assert len(links) == len(clean) and all(item.skip_reason.startswith("same file as ") for item in links)
