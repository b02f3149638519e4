"""MMI: three frames around the apex of each labelled sequence."""
import pytest
from source_layouts import assert_loads, labelled, mmi, text_file, write

from muldml.data.sources import load_source
from muldml.errors import UserError


def test_mmi_takes_the_peak_or_middle_frames(tmp_path):
    mmi(tmp_path)
    data = load_source("mmi", tmp_path)
    assert data.classes == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    assert [(item.key, item.label, item.subject) for item in labelled(data)] == [
        ("1/s1/frame4.png", "happiness", "1"), ("1/s1/frame5.png", "happiness", "1"),
        ("1/s1/frame6.png", "happiness", "1"), ("1/s2/frame1.png", "disgust", "1"),
        ("1/s2/frame2.png", "disgust", "1"), ("1/s2/frame3.png", "disgust", "1")]
    skipped = {item.key: item.skip_reason for item in data.items if item.label is None}
    assert sorted(skipped) == ["2/s3/frame1.png", "2/s3/frame2.png", "2/s3/frame3.png",
                               "2/s4/frame2.png", "2/s4/frame3.png", "2/s4/frame4.png"]
    assert "MMI" in skipped["2/s3/frame1.png"] and "out of range" in skipped["2/s4/frame3.png"]
    assert len(data.warnings) == 3 and "no frames in 2/s5" in data.warnings[-1]
    assert_loads(data)


def test_mmi_needs_its_label_file_and_columns(tmp_path):
    write(tmp_path / "1" / "s1" / "frame1.png")
    with pytest.raises(UserError, match="labels.csv"):
        load_source("mmi", tmp_path)
    text_file(tmp_path / "labels.csv", "subject,sequence\n1,s1\n")
    with pytest.raises(UserError, match="missing column.*emotion"):
        load_source("mmi", tmp_path)
