"""Study reports: the paper's values beside the obtained ones, paired statistics, the
best-epoch column and the regime warning."""
import pytest

from muldml.regime import UNDIFFERENTIATED
from muldml.report import Report
from muldml.studies.definitions import STUDIES
from muldml.studies.paper import CLAIMED_PAIRS, PAPER_ACCURACY, paper_value
from muldml.studies.report import _epochs, _regime_warning, paired_comparison


def test_paper_values_match_the_published_tables():
    # Spot checks typed from the paper's tables.
    assert paper_value("table3", "mmi", "Mul-DML") == 81.57
    assert paper_value("table3", "sfew", "S-Trad-Triplet (τ*)") == 56.65
    assert paper_value("table2", "raf-db", "τ = 0.65") == 85.63
    assert paper_value("table4", "ck+", "S-DML (τ*)") == 96.86
    assert paper_value("baselines", "raf-db", "CNN") == 84.94  # Table VI ...
    assert paper_value("table7", "raf-db", "CNN") == 86.63  # ... and Table VII print different values
    assert paper_value("baselines", "mmi", "HIST loss") == 79.13
    assert paper_value("table1", "sfew", "δτ = 0.05 (N = 13), d = 64") == 58.10
    assert paper_value("table1", "ck+", "δτ = 0.1 (N = 7), d = 256") is None  # Table I is SFEW only
    assert paper_value("table3", None, "Mul-DML") is None
    # Every key names a real cell of its study, and every claimed pair too.
    for study, by_dataset in PAPER_ACCURACY.items():
        labels = {c.label for c in STUDIES[study].cells}
        for rows in by_dataset.values():
            assert set(rows) <= labels, study
    for study, pairs in CLAIMED_PAIRS.items():
        labels = {c.label for c in STUDIES[study].cells}
        assert all(a in labels and b in labels for a, b in pairs), study


def runs(accuracies):
    return [{"seed": 0, "fold": f"fold-{i:02d}", "accuracy": a} for i, a in enumerate(accuracies)]


def test_paired_comparison_by_hand():
    c = paired_comparison(runs([0.52, 0.61, 0.40, 0.70, 0.33]), runs([0.50, 0.60, 0.40, 0.71, 0.30]))
    # Differences in points: 2, 1, 0, -1, 3: mean 1, sample std sqrt(2.5); t(0.975, 4) = 2.7764.
    assert c["n"] == 5 and (c["wins"], c["ties"], c["losses"]) == (3, 1, 1)
    assert c["mean"] == pytest.approx(1.0) and c["std"] == pytest.approx(2.5 ** 0.5)
    half = 2.7764451 * 2.5 ** 0.5 / 5 ** 0.5
    assert c["ci95"] == pytest.approx([1 - half, 1 + half], abs=1e-5)
    # Ten wins of distinct sizes: the exact two-sided signed-rank p is 2 / 2^10.
    ten = paired_comparison(runs([0.5 + i / 100 for i in range(1, 11)]), runs([0.5] * 10))
    assert ten["wilcoxon_p"] == pytest.approx(2 / 1024) and ten["t_test_p"] < 0.001
    # Unmatched runs are left out; no difference at all: no test p-value, all ties.
    same = paired_comparison(runs([0.5, 0.5]), runs([0.5, 0.5, 0.9]))
    assert same["n"] == 2 and same["ties"] == 2 and same["wilcoxon_p"] is None and same["t_test_p"] is None


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


def test_summary_averages_the_merged_retrieval_over_the_runs_that_measured_it():
    from muldml.studies.report import summarize

    def run(fold, retrieval):
        return {"accuracy": 0.5, "confusion": [[1, 1], [0, 2]], "classes": ["a", "b"], "dir": f"runs/x/seed-0/{fold}",
                "retrieval": retrieval}

    summary = summarize([run("fold-01", {"precision_at_1": 0.5, "map_at_r": 0.25}),
                         run("fold-02", {"precision_at_1": 1.0, "map_at_r": 0.75}),
                         run("fold-03", None)])  # too few images to measure
    assert summary["precision_at_1_mean"] == pytest.approx(75.0) and summary["map_at_r_mean"] == pytest.approx(50.0)
    assert summary["retrieval_runs"] == 2 and summary["n"] == 3
    none = summarize([run("fold-01", None)])
    assert none["precision_at_1_mean"] is None and none["retrieval_runs"] == 0
