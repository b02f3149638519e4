import pytest
import torch

from muldml.losses import MultiThresholdTripletLoss
from muldml.training.loop import Meter


def test_meter_weights_slice_losses_by_triplet_count():
    loss = MultiThresholdTripletLoss(margins=[0.2, 0.5], slice_dim=4)
    meter = Meter(num_slices=2)
    gen = torch.Generator().manual_seed(0)
    # A batch of one class has no negative: K = 0, loss 0. It must not halve the mean.
    same = torch.zeros(6, dtype=torch.long)
    loss(torch.randn(6, 8, generator=gen), same)
    assert int(loss.last_output.num_triplets) == 0
    meter.add(torch.zeros(6, 3), same, torch.tensor(1.0), loss.last_output)
    a_labels, b_labels = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    loss(torch.randn(4, 8, generator=gen), a_labels)
    a = loss.last_output
    meter.add(torch.zeros(4, 3), a_labels, torch.tensor(1.0), a)
    loss(torch.randn(8, 8, generator=gen), b_labels)
    b = loss.last_output
    meter.add(torch.zeros(8, 3), b_labels, torch.tensor(1.0), b)
    row = meter.row("val")
    for i in range(2):
        expected = (a.slice_losses[i] * 4 + b.slice_losses[i] * 8) / 12  # weights K = 4 and 8
        assert row[f"val_triplet_{i}"] == pytest.approx(float(expected), rel=1e-6)
        assert row[f"val_active_{i}"] == pytest.approx(float(a.num_active[i] + b.num_active[i]) / (2 * 12))


def resnet(dropout: float, frozen_norm: bool) -> torch.nn.Module:
    from muldml.model import MulDMLNet

    torch.manual_seed(0)
    net = MulDMLNet(3, num_slices=2, slice_dim=8, dropout=dropout).double().train()
    for m in net.modules():
        if frozen_norm and isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    return net


def batch():
    gen = torch.Generator().manual_seed(2)
    return torch.randn(10, 3, 32, 32, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


def grads(net):
    return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def step(net, chunk):
    loss = MultiThresholdTripletLoss(margins=[0.2, 0.5], slice_dim=8, backend="torch")
    from muldml.training.loop import train_step

    images, labels = batch()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    out = train_step(net, loss, images, labels, optimizer, chunk=chunk)
    return out, grads(net)


def test_gradient_cache_equals_plain_training():
    # No cross-sample coupling (BatchNorm statistics frozen, no dropout): the cached
    # two-pass gradients equal one plain pass over the whole batch.
    plain, expected = step(resnet(0.0, frozen_norm=True), None)
    cached, got = step(resnet(0.0, frozen_norm=True), 4)
    assert float(cached.loss) == pytest.approx(float(plain.loss), abs=1e-10)
    assert expected.keys() == got.keys() and len(got) > 60
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-5, rtol=0), name


def test_gradient_cache_replays_dropout_and_moves_norm_statistics_once():
    # With dropout and BatchNorm in train mode, the reference is the same chunks run with
    # autograd one after another: pass 2 must draw pass 1's dropout masks again, and the
    # running statistics must move once per chunk, not twice.
    from muldml.training.loop import cross_entropy

    reference = resnet(0.5, frozen_norm=False)
    images, labels = batch()
    loss = MultiThresholdTripletLoss(margins=[0.2, 0.5], slice_dim=8, backend="torch")
    torch.manual_seed(7)
    outs = [reference(x) for x in images.split(4)]
    embedding, logits = torch.cat([o.embedding for o in outs]), torch.cat([o.logits for o in outs])
    (cross_entropy(logits, labels) + loss(embedding, labels)).backward()
    expected = grads(reference)
    net = resnet(0.5, frozen_norm=False)
    torch.manual_seed(7)
    _, got = step(net, 4)
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-5, rtol=0), name
    for (name, a), b in zip(reference.named_buffers(), net.buffers()):
        assert torch.allclose(a.double(), b.double(), atol=1e-12), name


def test_gradient_cache_with_batchnorm_in_train_mode_is_not_whole_batch_training():
    # What the README states: with BatchNorm in train mode (how muldml trains ResNet-18), the
    # cached gradients are those of the chunks above (each normalised by its own statistics),
    # not of one pass over the whole batch. The gap is large, not rounding.
    _, whole = step(resnet(0.0, frozen_norm=False), None)
    _, cached = step(resnet(0.0, frozen_norm=False), 4)
    gap = max(float((cached[n] - whole[n]).norm() / whole[n].norm()) for n in whole if whole[n].norm() > 0)
    assert gap > 0.1


def test_bf16_autocast_step_on_cpu():
    from muldml.training.loop import Precision, train_step

    net = resnet(0.0, frozen_norm=False).float()
    images, labels = batch()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    loss = MultiThresholdTripletLoss(margins=[0.2, 0.5], slice_dim=8, backend="torch")
    out = train_step(net, loss, images.float(), labels, optimizer, Precision(torch.bfloat16))
    assert torch.isfinite(out.loss) and all(torch.isfinite(g).all() for g in grads(net).values())
    assert loss.last_output.loss.dtype == torch.float32  # the loss promotes bf16 embeddings


def test_step_measures_each_loss_terms_gradient_at_the_embedding():
    from muldml.baselines import CircleMetricLoss
    from muldml.training.loop import cross_entropy, train_step

    images, labels = batch()
    for metric_loss in (MultiThresholdTripletLoss(margins=[0.2, 0.5], slice_dim=8, backend="torch"),
                        CircleMetricLoss(gamma=32.0, lam=0.5)):
        net = resnet(0.0, frozen_norm=True)
        out = net(images)
        ce = cross_entropy(out.logits, labels)
        metric = metric_loss(out.embedding, labels)
        expected = [torch.autograd.grad(term, out.embedding, retain_graph=True)[0].norm() for term in (ce, metric)]
        step = train_step(resnet(0.0, frozen_norm=True), metric_loss, images, labels,
                          torch.optim.SGD(net.parameters(), lr=0.0))
        torch.testing.assert_close(step.gradient_norms, torch.stack(expected).float())
        assert float(step.loss - step.ce) == pytest.approx(float(metric.detach()), rel=1e-9)


def test_meter_logs_the_metric_term_its_share_and_the_hinge_margins():
    from muldml.training.loop import StepOutput

    loss = MultiThresholdTripletLoss(margins=[0.2, 0.5], slice_dim=4, backend="torch")
    gen = torch.Generator().manual_seed(4)
    meter = Meter(num_slices=2)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    expected_margin, metrics = 0.0, []
    for _ in range(2):
        embedding = torch.randn(6, 8, generator=gen)
        metric = loss(embedding, labels)
        step = StepOutput(torch.tensor(1.0) + metric, torch.tensor(1.0), loss.last_output, torch.zeros(6, 3), embedding,
                          torch.tensor([3.0, 1.0]))
        meter.add(step.logits, labels, step.ce, step.triplet)
        meter.add_diagnostics(step, len(labels), loss.slice_dim, loss.normalize)
        metrics.append(float(metric))
        x = torch.nn.functional.normalize(embedding[:, :4], dim=1)
        d = torch.cdist(x, x)
        expected_margin += sum(float(d[a][labels != labels[a]].min() - d[a][(labels == labels[a])].max()) for a in range(6))
    row = meter.row("train")
    assert row["train_metric"] == pytest.approx(sum(metrics) / 2)
    assert row["train_metric_share"] == pytest.approx(sum(metrics) / (2 + sum(metrics)))
    assert row["train_margin_0"] == pytest.approx(expected_margin / 12, rel=1e-5)
    assert row["train_grad_ce"] == 3.0 and row["train_grad_metric"] == 1.0 and row["train_grad_metric_share"] == 0.25


def test_gradient_cache_chunks_never_leave_one_image_for_batchnorm():
    from muldml.training.loop import chunk_sizes

    assert chunk_sizes(8, 7) == [8] and chunk_sizes(15, 7) == [7, 8] and chunk_sizes(16, 7) == [7, 7, 2]
    assert chunk_sizes(10, 4) == [4, 4, 2] and chunk_sizes(10, None) == [10] and chunk_sizes(10, 12) == [10]
    for batch in range(2, 40):
        for chunk in range(2, 12):
            sizes = chunk_sizes(batch, chunk)
            assert sum(sizes) == batch and min(sizes) >= 2 and max(sizes) <= max(chunk + 1, 2), (batch, chunk)
    # 10 images of 32 px in chunks of 9: the last chunk would hold one image, whose 1×1 last
    # feature map BatchNorm in train mode cannot normalise. The remainder joins the chunk before.
    out, got = step(resnet(0.5, frozen_norm=False), 9)
    assert torch.isfinite(out.loss) and len(got) > 60


def test_a_gradient_cache_of_one_image_is_refused_in_one_line():
    from muldml.config import Runtime
    from muldml.errors import UserError

    with pytest.raises(UserError, match=r"grad_cache must be in \[2, ∞\), got 1"):
        Runtime(grad_cache=1).validate()
    Runtime(grad_cache=2).validate()
