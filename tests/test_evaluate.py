import json

import numpy as np
import pytest

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


def _untrained(preset: str, tmp_path, **settings):
    """A freshly initialised network of `preset` on 24-px demo faces (3 images per class)."""
    import torch

    from muldml.data.folder import scan_folder
    from muldml.data.synthetic import write_demo_dataset
    from muldml.training.build import build_model

    data = write_demo_dataset(tmp_path / "faces", num_subjects=3, images_per_expression=1, size=24, seed=0,
                              progress=False)
    samples, classes = scan_folder(data)
    cfg = preset_config(preset, image_size=24, batch_size=8, **settings)
    cfg.classes = list(classes)
    torch.manual_seed(0)
    return build_model(cfg), cfg, samples


def test_evaluate_reports_retrieval_per_slice_and_merged_and_the_slice_map_without_history(tmp_path):
    import torch

    from muldml.evaluate import evaluate
    from muldml.retrieval import retrieval_metrics
    from muldml.studies.measures import embed

    model, cfg, samples = _untrained("mul-dml", tmp_path, tau_step=0.3)
    evaluate((model, cfg), samples, tmp_path / "eval")  # no history: no regime section
    retrieval = json.loads((tmp_path / "eval" / "metrics.json").read_text())["retrieval"]
    assert retrieval["num_images"] == len(samples) == 21 and retrieval["margins"] == [0.15, 0.45, 0.75]
    # The numbers are those of the evaluated images' embeddings, in their order.
    embeddings, labels = embed(model, samples, cfg, torch.device("cpu"))
    expected = retrieval_metrics(embeddings, labels, 3)
    for got, want in zip([*retrieval["slices"], retrieval["merged"]], [*expected["slices"], expected["merged"]]):
        assert got == pytest.approx(want, abs=1e-6)
    cka = np.array(retrieval["slice_cka"])
    assert cka.shape == (3, 3) and np.allclose(np.diag(cka), 1) and np.allclose(cka, cka.T)
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "## Embedding retrieval" in text and "Threshold regime" not in text
    assert "| slice | margin τ | Precision@1 | MAP@R | NMI |" in text
    p1 = retrieval["slices"][1]["precision_at_1"]
    assert f"| 2 | 0.45 | {100 * p1:.1f}% |" in text and "| merged | — |" in text
    assert f"| 3 | {cka[2, 0]:.2f} | {cka[2, 1]:.2f} | 1.00 |" in text
    assert "](slice_cka.png)" in text and (tmp_path / "eval" / "slice_cka.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_reports_the_one_embedding_of_a_softmax_only_preset(tmp_path):
    from muldml.evaluate import evaluate

    model, cfg, samples = _untrained("cnn", tmp_path)
    result = evaluate((model, cfg), samples, tmp_path / "eval")
    retrieval = result.metrics["retrieval"]
    assert retrieval["margins"] == [] and retrieval["slice_cka"] is None
    assert retrieval["slices"] == [retrieval["merged"]] and 0 <= retrieval["merged"]["NMI"] <= 1
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "softmax only" in text and "| embedding (one slice) | — |" in text
    assert not (tmp_path / "eval" / "slice_cka.png").exists()


def test_evaluate_says_why_retrieval_is_not_measured(tmp_path):
    from muldml.evaluate import evaluate

    model, cfg, samples = _untrained("mul-dml", tmp_path, tau_step=0.3)
    one_class = [s for s in samples if s.label == 0]
    result = evaluate((model, cfg), one_class, tmp_path / "eval")
    assert "two classes" in result.metrics["retrieval"]["skipped"]
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "## Embedding retrieval\n\nNot measured: retrieval metrics need at least two classes" in text
    assert not (tmp_path / "eval" / "slice_cka.png").exists()
