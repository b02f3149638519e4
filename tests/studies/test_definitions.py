"""Study definitions that are settings only: the xbm study compares one preset with and
without the cross-batch memory, every other setting shared."""
from muldml.config import preset_config
from muldml.studies.definitions import STUDIES, XBM_SIZE


def test_xbm_study_differs_in_the_memory_only():
    plain, memory = STUDIES["xbm"].cells
    a = preset_config(plain.preset, **plain.settings()).to_dict()
    b = preset_config(memory.preset, **memory.settings()).to_dict()
    assert {k for k in a if a[k] != b[k]} == {"xbm_size"} and b["xbm_size"] == XBM_SIZE > 0
    # The warm-up is a common setting, so it reaches both cells alike.
    late = preset_config(memory.preset, **{"xbm_start_epoch": 5, **memory.settings()})
    assert late.xbm_start_epoch == 5
