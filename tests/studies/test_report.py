from muldml.regime import UNDIFFERENTIATED
from muldml.report import Report
from muldml.studies.report import _epochs, _regime_warning


def test_study_report_names_the_runs_whose_thresholds_did_not_differentiate_the_slices():
    report = Report("t")
    _regime_warning({"Mul-DML": [{"undifferentiated": True}, {"undifferentiated": False}],
                     "CNN": [{"undifferentiated": False}]}, report)
    text = report.text()
    assert UNDIFFERENTIATED in text and "1 of 2 run(s) of Mul-DML" in text and "CNN" not in text
    quiet = Report("t")
    _regime_warning({"CNN": [{}], "Mul-DML": [{"undifferentiated": False}]}, quiet)
    assert UNDIFFERENTIATED not in quiet.text()


def test_best_epoch_column():
    assert _epochs([]) == "—" and _epochs([4]) == "4" and _epochs([3, 9, 5]) == "5 (3–9)"
