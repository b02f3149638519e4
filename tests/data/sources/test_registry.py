"""The registry of readers and its errors."""
import pytest

from muldml.data.sources import LOADERS, load_source
from muldml.errors import UserError


def test_registry_and_its_errors(tmp_path):
    assert set(LOADERS) == {"ck+", "ck+-folders", "mmi", "sfew", "raf-db", "fer2013", "ferplus", "affectnet", "jaffe",
                            "folder"}
    with pytest.raises(UserError, match="unknown dataset 'ckplus'"):
        load_source("ckplus", tmp_path)
    for name in LOADERS:
        with pytest.raises(UserError, match="not found"):
            load_source(name, tmp_path / "missing")
    with pytest.raises(UserError, match="include_neutral"):
        load_source("CK+", tmp_path, neutral=True)
