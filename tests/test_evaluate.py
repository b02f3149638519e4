import json

import numpy as np

from muldml.config import preset_config
from muldml.evaluate import compute_metrics, write_report


def test_metrics_by_hand():
    m = compute_metrics([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 0], ["a", "b", "c"])
    assert m["accuracy"] == 3 / 6
    assert m["confusion"] == [[1, 1, 0], [1, 2, 0], [1, 0, 0]]
    assert m["per_class_recall"] == {"a": 0.5, "b": 2 / 3, "c": 0.0}
    assert compute_metrics([0], [0], ["a", "b"])["per_class_recall"]["b"] is None
    # By hand: precision a 1/3, b 2/3, c 0; recall 1/2, 2/3, 0; F1 2/5, 2/3, 0.
    assert m["per_class_precision"] == {"a": 1 / 3, "b": 2 / 3, "c": 0.0}
    assert m["per_class_f1"]["a"] == 0.4 and abs(m["per_class_f1"]["b"] - 2 / 3) < 1e-12
    assert abs(m["macro_f1"] - (0.4 + 2 / 3) / 3) < 1e-12
    assert abs(m["balanced_accuracy"] - (0.5 + 2 / 3) / 3) < 1e-12
    assert m["majority_baseline"] == 3 / 6 and m["per_class_support"] == {"a": 2, "b": 3, "c": 1}


def test_report_shows_the_majority_baseline_counts_and_per_class_metrics(tmp_path):
    cfg = preset_config("cnn")
    # Every image called "b": the accuracy is the majority-class rate, and the report says so.
    m = compute_metrics([0, 1, 1, 1, 2], [1, 1, 1, 1, 1], ["a", "b", "c"])
    text = write_report(tmp_path, cfg, m).read_text()
    assert "majority-class baseline 60.00% — **at or below the majority-class baseline" in text
    assert "Macro-F1 25.00%" in text and "balanced accuracy 33.33%" in text
    assert "| b | 0 (0%) | 3 (100%) | 0 (0%) | 3 |" in text
    assert "| a | 1 | 0.0% | 0.0% | 0.0% |" in text


def test_report_files(tmp_path):
    cfg = preset_config("mul-dml")
    m = compute_metrics([0, 1, 2, 2], [0, 1, 2, 1], ["anger", "fear", "neutral"])
    history = [{"epoch": e, "train_ce": 1 / e, "train_acc": 0.3 * e, "val_ce": 1.2 / e, "val_acc": 0.25 * e,
                "train_triplet_0": 0.5 / e, "train_triplet_1": 0.4 / e} for e in (1, 2, 3)]
    report = write_report(tmp_path, cfg, m, history, "test run")
    text = report.read_text()
    assert "75.00%" in text and "confusion.png" in text and "curves.png" in text and '"preset": "mul-dml"' in text
    assert json.loads((tmp_path / "metrics.json").read_text())["accuracy"] == 0.75
    rows = (tmp_path / "confusion.csv").read_text().splitlines()
    assert rows[0] == "true\\predicted,anger,fear,neutral" and rows[3] == "neutral,0,1,1"
    for png in ("confusion.png", "curves.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp"))
    assert np.array(m["confusion"]).sum() == 4
