"""The shared item type and label spellings."""
import pytest

from muldml.data.classes import CANONICAL_CLASSES
from muldml.data.sources import RawItem, canonical_label


def test_canonical_label_maps_common_spellings():
    assert canonical_label("Happy") == "happiness" and canonical_label(" sad ") == "sadness"
    assert canonical_label("angry") == "anger" and canonical_label("Surprised") == "surprise"
    assert canonical_label("disgusted") == "disgust" and canonical_label("fearful") == "fear"
    assert all(canonical_label(name) == name for name in CANONICAL_CLASSES)
    assert canonical_label("pain") is None


def test_an_item_has_a_label_or_a_reason():
    with pytest.raises(ValueError):
        RawItem("x.png", lambda: None, None)
    with pytest.raises(ValueError):
        RawItem("x.png", lambda: None, "anger", skip_reason="both")
