"""The threshold regime: the core fact (τ never reaches the gradient of an active hinge, so
with every hinge active Mul-DML and Mul-DML-Same give the same gradients), the per-slice
hinge margins, and the warning when the thresholds do not differentiate the slices."""
import pytest
import torch

from muldml.losses import multi_threshold_triplet_loss
from muldml.regime import UNDIFFERENTIATED, hinge_margins, undifferentiated

MARGINS = [0.15, 0.45, 0.75]  # Mul-DML, three slices
SAME = [0.45] * 3  # Mul-DML-Same at τ* = 0.45
BACKENDS = ["torch", "reference", "triton"]  # triton: on the CPU through its interpreter
LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])


def _gradient(embedding, margins, backend, dual):
    x = embedding.clone().requires_grad_()
    out = multi_threshold_triplet_loss(x, LABELS, margins, dual=dual, backend=backend)
    (0.7 * out.loss).backward()  # grad_output ≠ 1
    return out, x.grad


def _terms(out):
    return int(out.num_triplets) * (2 if out.dual else 1)


def _clusters(cluster_of, spread, dim=16, slices=3):
    """(12, slices·dim): image j near centre cluster_of[j] (random unit vectors, per slice),
    with Gaussian noise of std `spread`."""
    gen = torch.Generator().manual_seed(3)
    count = int(cluster_of.max()) + 1
    centres = torch.nn.functional.normalize(torch.randn(count, slices, dim, generator=gen, dtype=torch.float64), dim=2)
    noise = spread * torch.randn(len(cluster_of), slices, dim, generator=gen, dtype=torch.float64)
    return (centres[cluster_of] + noise).reshape(len(cluster_of), slices * dim)


def _mixed():
    """Classes in loose clusters: d(a,n*) − d(a,p*) lies between the smallest and the largest
    margin for many anchors (some hinges inactive)."""
    return _clusters(cluster_of=LABELS, spread=0.25)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dual", [True, False])
def test_every_hinge_active_gives_mul_dml_and_same_identical_gradients(backend, dual):
    # Labels against the geometry: each tight cluster holds one image of every class, so an
    # anchor's positives lie in other clusters and its negatives beside it: every hinge is
    # active at τ = 0.15 already.
    embedding = _clusters(cluster_of=torch.arange(len(LABELS)) % 3, spread=0.01)
    multi, g_multi = _gradient(embedding, MARGINS, backend, dual)
    same, g_same = _gradient(embedding, SAME, backend, dual)
    assert multi.num_active.tolist() == [_terms(multi)] * 3 == same.num_active.tolist()  # the premise
    assert not torch.allclose(multi.slice_losses, same.slice_losses)  # τ does change the value …
    torch.testing.assert_close(g_multi, g_same, rtol=0, atol=1e-12)  # … never the gradient


@pytest.mark.parametrize("backend", BACKENDS)
def test_some_hinges_inactive_make_the_gradients_differ(backend):
    embedding = _mixed()
    multi, g_multi = _gradient(embedding, MARGINS, backend, True)
    same, g_same = _gradient(embedding, SAME, backend, True)
    terms = _terms(multi)
    assert int(multi.num_active[0]) < terms and int(multi.num_active[-1]) > int(multi.num_active[0])  # the premise
    assert (multi.num_active != same.num_active).any()
    # Slice 2 has τ = 0.45 in both runs: the same gradient; slices 1 and 3 differ in τ and in
    # which hinges are active, so their gradients differ.
    block = [(g_multi - g_same)[:, 16 * i:16 * (i + 1)].abs().amax() for i in range(3)]
    assert block[1] == 0
    assert block[0] > 1e-3 and block[2] > 1e-3


def test_hinge_margins_match_the_traditional_loss_when_every_hinge_is_active():
    # Eq. 2 with every hinge active: loss_i = τ_i − mean(d(a,n*) − d(a,p*)).
    gen = torch.Generator().manual_seed(1)
    embedding = torch.randn(len(LABELS), 3 * 16, generator=gen, dtype=torch.float64)
    out = multi_threshold_triplet_loss(embedding, LABELS, [1.5, 2.0, 2.5], dual=False, backend="torch")
    assert out.num_active.tolist() == [int(out.num_triplets)] * 3
    mean = hinge_margins(embedding, out, 16) / out.num_triplets
    torch.testing.assert_close(mean, torch.tensor([1.5, 2.0, 2.5], dtype=torch.float64) - out.slice_losses)


def test_hinge_margins_skip_anchors_without_a_triplet_and_foreign_rows():
    labels = torch.tensor([0, 0, 1, 2])  # anchors 2 and 3 have no positive
    embedding = torch.randn(4, 8, dtype=torch.float64)
    out = multi_threshold_triplet_loss(embedding, labels, [0.3], backend="torch")
    x = torch.nn.functional.normalize(embedding, dim=1)
    d = torch.cdist(x, x)
    expected = sum(min(d[a, 2], d[a, 3]) - d[a, 1 - a] for a in (0, 1))
    torch.testing.assert_close(hinge_margins(embedding, out, 8), expected.reshape(1))
    assert hinge_margins(embedding[:3], out, 8) is None  # indices into a gathered batch


def _history(active_rows):
    return [{"epoch": e + 1, **{f"train_active_{i}": a for i, a in enumerate(row)}} for e, row in enumerate(active_rows)]


def test_warning_when_every_slice_stays_active_for_most_of_training():
    assert undifferentiated(_history([[1.0, 0.995]] * 3 + [[0.9, 1.0]] * 2))
    assert not undifferentiated(_history([[1.0, 0.995]] * 2 + [[0.9, 1.0]] * 3))  # not most epochs
    assert not undifferentiated(_history([[1.0, 0.98]] * 5))  # one slice below 99%
    assert not undifferentiated(_history([[1.0]] * 5))  # one slice: no thresholds to compare
    assert "do not differentiate" in UNDIFFERENTIATED


def test_training_report_shows_the_regime_and_warns(tmp_path, capsys):
    from muldml.config import Runtime, preset_config
    from muldml.data.folder import scan_folder
    from muldml.data.synthetic import write_demo_dataset
    from muldml.evaluate import evaluate
    from muldml.training import fit

    data = write_demo_dataset(tmp_path / "faces", num_subjects=3, images_per_expression=1, size=24, seed=0,
                              progress=False)
    samples, classes = scan_folder(data)
    cfg = preset_config("mul-dml", tau_step=0.3, epochs=1, image_size=24, batch_size=16, lr=1e-3)
    cfg.classes = list(classes)
    state = fit(cfg, samples, samples[:8], tmp_path / "run", Runtime(num_workers=0), progress=False)
    row = state["history"][-1]
    for i in range(3):
        assert 0 <= row[f"train_active_{i}"] <= 1 and -2 <= row[f"train_margin_{i}"] <= 2
    assert 0 < row["train_grad_metric_share"] < 1 and row["train_metric"] > 0
    saturated = all(row[f"train_active_{i}"] >= 0.99 for i in range(3))
    assert saturated  # one epoch from scratch: every hinge active, the warning applies
    assert (UNDIFFERENTIATED in capsys.readouterr().out) == saturated
    evaluate(state, samples[:10], tmp_path / "run")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Threshold regime" in report and (UNDIFFERENTIATED in report) == saturated
    assert (tmp_path / "run" / "regime.png").stat().st_size > 0 and (tmp_path / "run" / "slice_cka.png").is_file()
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"train_metric", "train_metric_share", "train_margin_2", "train_grad_ce", "val_metric"} <= set(header)
