import pytest

from muldml import io as atomic


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "f.txt"
    atomic.write_text(path, "first")
    with pytest.raises(RuntimeError):
        def fail(f):
            f.write(b"half")
            raise RuntimeError("interrupted")
        atomic.atomic_write(path, fail)
    assert path.read_text() == "first"  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # and no temporary file is left
    atomic.write_json(path, {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'
