"""The one rule for which files in a dataset folder are data."""
from PIL import Image

from muldml.data.files import IMAGE_SUFFIXES, image_files, is_image_file, is_metadata, visible_folders


def test_os_metadata_and_hidden_entries_are_not_data():
    for name in ("._S005_001_00000011.png", ".DS_Store", "Thumbs.db", "THUMBS.DB", "desktop.ini", "__MACOSX",
                 ".hidden.png", ".git"):
        assert is_metadata(name), name
    for name in ("S005_001_00000011.png", "happy", "_x.png", "thumbs.png"):
        assert not is_metadata(name), name


def test_image_suffixes_are_the_formats_pillow_decodes():
    Image.init()
    for suffix in (".jfif", ".jpe", ".jpg", ".JPEG", ".png", ".gif", ".tga", ".tif", ".webp", ".bmp", ".pgm"):
        assert is_image_file(f"a{suffix}"), suffix
    for suffix in (".txt", ".csv", ".svg", ".mpg", ".h5", ".pdf", ""):
        assert not is_image_file(f"a{suffix}"), suffix
    assert all(Image.registered_extensions()[s] in Image.OPEN for s in IMAGE_SUFFIXES)


def test_listing_splits_images_from_other_files_and_skips_metadata(tmp_path):
    for name in ("frame10.png", "frame2.jfif", "._frame2.jfif", ".DS_Store", "Thumbs.db", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    for name in ("S10", "S9", "__MACOSX", ".Trashes"):
        (tmp_path / name).mkdir()
    images, others = image_files(tmp_path)
    assert [p.name for p in images] == ["frame2.jfif", "frame10.png"]  # natural order
    assert [p.name for p in others] == ["notes.txt"]
    assert [p.name for p in visible_folders(tmp_path)] == ["S9", "S10"]
    assert image_files(tmp_path / "missing") == ([], [])


def test_walk_and_glob_enter_each_real_folder_once(tmp_path):
    from muldml.data.files import glob_paths, walk

    (tmp_path / "sub" / "deep").mkdir(parents=True)
    for name in ("a.png", "sub/b.png", "sub/deep/c.png", "sub/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub" / "up").symlink_to("..")  # two loops: glob.glob's ** would take 2^40 paths
    (tmp_path / "sub" / "deep" / "top").symlink_to("../..")
    (tmp_path / "c_again.png").symlink_to(tmp_path / "sub" / "deep" / "c.png")
    walked = [(folder.relative_to(tmp_path).as_posix(), [p.name for p in images], [p.name for p in others])
              for folder, images, others in walk(tmp_path)]
    assert walked == [(".", ["a.png", "c_again.png"], []), ("sub", ["b.png"], ["notes.txt"]), ("sub/deep", [], [])]
    found = [p.relative_to(tmp_path).as_posix() for p in glob_paths(str(tmp_path / "**" / "*.png"))]
    assert found == ["a.png", "c_again.png", "sub/b.png"]
    assert [p.name for p in glob_paths(str(tmp_path / "sub" / "*.png"))] == ["b.png"]
    assert [p.name for p in glob_paths(str(tmp_path / "**" / "deep" / "*.png"))] == ["c.png"]
