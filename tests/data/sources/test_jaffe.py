"""JAFFE: subject and expression from the file name."""
from source_layouts import assert_loads, jaffe

from muldml.data.classes import EXPRESSIONS
from muldml.data.sources import load_source


def test_jaffe_names_give_subject_and_expression(tmp_path):
    jaffe(tmp_path)
    data = load_source("jaffe", tmp_path)
    assert data.classes == list(EXPRESSIONS)
    assert [(item.key, item.label, item.subject) for item in data.items] == [
        ("KA.AN1.39.tiff", "anger", "KA"), ("KA.HA2.30.tiff", "happiness", "KA"), ("KA.XX1.41.tiff", None, "KA"),
        ("YM.NE3.51.tiff", "neutral", "YM"), ("YM.SU1.58.tiff", "surprise", "YM"), ("photo.tiff", None, None)]
    assert "'XX'" in data.items[2].skip_reason and "KA.AN1.39.tiff" in data.items[-1].skip_reason
    assert len(data.warnings) == 2
    assert_loads(data)
