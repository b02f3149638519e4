"""Cross-batch memory (XBM): the queue of MultiThresholdTripletLoss(memory_size=Q) and the
memory-aware mining of the reference and torch backends, against float64."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from triplet_checks import case_tensors, check_against_reference, memory_case, memory_cases, random_case

from muldml.kernels.triplet.chunked import mine_batch_hard
from muldml.losses import MultiThresholdTripletLoss, multi_threshold_triplet_loss
from muldml.kernels.triplet.naive import reference_triplet_loss

@settings(max_examples=150, deadline=None)
@given(case=memory_cases())
def test_torch_backend_matches_reference_property(case):
    x, labels, memory = case_tensors(case)
    check_against_reference("torch", x, labels, case["margins"], case["slice_dim"], dual=case["dual"],
                            normalize=case["normalize"], grad_scale=case["grad_scale"], memory=memory)


@settings(max_examples=60, deadline=None)
@given(case=memory_cases(max_batch=20, max_memory=30))
def test_reference_with_memory_is_the_batch_loss_on_batch_and_memory(case):
    """The oracle, checked independently: memory rows appended to the batch as ordinary rows
    give every batch anchor the same triplets (same index space, same ties) and hinge terms;
    only K and the mean differ (memory rows are no anchors)."""
    x, labels, (rows, mem_labels) = case_tensors(case, torch.float64)
    tau = torch.tensor(case["margins"], dtype=torch.float64)
    d, batch = case["slice_dim"], case["batch"]
    with_memory = reference_triplet_loss(x, labels, tau, d, dual=case["dual"], normalize=case["normalize"],
                                         memory=(rows, mem_labels))
    joined = reference_triplet_loss(torch.cat([x, rows]), torch.cat([labels, mem_labels]), tau, d,
                                    dual=case["dual"], normalize=case["normalize"])
    assert torch.equal(with_memory.pos_idx, joined.pos_idx[:, :batch])
    assert torch.equal(with_memory.neg_idx, joined.neg_idx[:, :batch])
    # Batch anchors' terms of the joined loss: recompute at its triplets with the batch as anchors.
    at = reference_triplet_loss(x, labels, tau, d, dual=case["dual"], normalize=case["normalize"],
                                memory=(rows, mem_labels), indices=(joined.pos_idx[:, :batch], joined.neg_idx[:, :batch]))
    torch.testing.assert_close(with_memory.loss, at.loss)
    assert int(with_memory.num_triplets) == int((joined.pos_idx[0, :batch] >= 0).sum())


def test_chunked_memory_mining_equals_one_chunk():
    x, labels = random_case(5, 37, 3, 11, 6)
    rows, mem_labels = memory_case(5, 301, 3, 11, 8, normalize=True)
    slices = torch.nn.functional.normalize(x.reshape(37, 3, 11).transpose(0, 1), dim=2)
    centre = slices.mean(1, keepdim=True)
    whole = mine_batch_hard(slices - centre, labels, 1 << 30, memory=(rows, mem_labels, centre))
    assert (whole[0] >= 37).any() and (whole[1] >= 37).any()  # the memory is mined at all
    for chunk in (1, 3 * 37 * 5, 3 * 37 * 40):
        pieces = mine_batch_hard(slices - centre, labels, chunk, memory=(rows, mem_labels, centre))
        assert torch.equal(pieces[0], whole[0]) and torch.equal(pieces[1], whole[1])


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_a_batch_of_one_class_has_triplets_only_through_memory(backend):
    x, _ = random_case(1, 8, 2, 5, 1)
    labels = torch.zeros(8, dtype=torch.long)
    rows, _ = memory_case(1, 6, 2, 5, 1, normalize=True)
    mem_labels = torch.tensor([3, 3, 4, 0, 5, 4])  # negatives only in memory; class 3 only in memory
    alone = multi_threshold_triplet_loss(x, labels, [0.3, 0.6], backend=backend)
    assert int(alone.num_triplets) == 0 and float(alone.loss) == 0
    out = check_against_reference(backend, x, labels, [0.3, 0.6], 5, dual=True, normalize=True,
                                  memory=(rows, mem_labels), grad_scale=0.37)
    assert int(out.num_triplets) == 8 and float(out.loss.detach()) > 0
    assert ((out.neg_idx >= 8) & (out.neg_idx != 8 + 3)).all()  # a memory row of another class


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_dual_term_between_two_memory_rows(backend):
    """Anchor 0's only positive and only negatives live in memory: d(p*, n*) joins two memory rows."""
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 1])
    rows = torch.tensor([[0.6, 0.8], [0.8, -0.6], [0.0, -1.0]])
    mem_labels = torch.tensor([0, 2, 2])
    out = multi_threshold_triplet_loss(x, labels, [0.5], backend=backend, memory=(rows, mem_labels))
    assert out.pos_idx[0, 0] == 2 and out.neg_idx[0, 0] == 3  # p* = memory 0, n* = memory 1 (indices B + m)
    out.loss.backward()
    assert torch.isfinite(x.grad).all()
    x2 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    out = multi_threshold_triplet_loss(x2, torch.tensor([0]), [0.5], backend=backend, memory=(rows, mem_labels))
    assert out.pos_idx[0, 0] == 1 and out.neg_idx[0, 0] == 2  # both from memory
    d_ap, d_pn = (x2[0] - rows[0]).norm(), (rows[0] - rows[1]).norm()
    d_an = (x2[0] - rows[1]).norm()
    expected = 0.5 * 0.5 * (torch.relu(d_ap - d_an + 0.5) + torch.relu(d_ap - d_pn + 0.5))
    torch.testing.assert_close(out.loss, expected)


def queue_loss(q=10, **kwargs):
    return MultiThresholdTripletLoss(margins=[0.2, 0.4], slice_dim=3, memory_size=q, backend="torch", **kwargs)


def test_queue_fills_then_wraps_around_in_fifo_order():
    loss = queue_loss(q=10)
    seen_rows, seen_labels = [], []
    for step, size in enumerate([4, 4, 4, 7, 13]):
        x, labels = random_case(step, size, 2, 3, 3)
        filled = min(sum(len(r) for r in seen_rows), 10)
        loss(x, labels)
        # The call mined against exactly the slots filled before it.
        assert loss.last_output.pos_idx.max() < size + max(filled, 1)
        seen_rows.append(torch.nn.functional.normalize(x.reshape(size, 2, 3), dim=2).reshape(size, 6))
        seen_labels.append(labels)
    everything, all_labels = torch.cat(seen_rows), torch.cat(seen_labels)  # 32 rows: slot of row r is r mod 10
    assert int(loss.memory_seen) == 32
    slots = torch.arange(22, 32) % 10
    torch.testing.assert_close(loss.memory_embeddings[slots], everything[22:])
    assert torch.equal(loss.memory_labels[slots], all_labels[22:])


def test_queue_shorter_than_its_size_mines_only_filled_slots():
    loss = queue_loss(q=50)
    first, first_labels = random_case(0, 6, 2, 3, 2)
    loss(first, first_labels)
    x, labels = random_case(1, 5, 2, 3, 2)
    got = loss(x, labels)
    rows = torch.nn.functional.normalize(first.reshape(6, 2, 3), dim=2).reshape(6, 6)
    expected = multi_threshold_triplet_loss(x, labels, [0.2, 0.4], backend="reference", memory=(rows, first_labels))
    torch.testing.assert_close(got, expected.loss.float())
    assert torch.equal(loss.last_output.pos_idx, expected.pos_idx)


def test_batch_longer_than_the_queue_keeps_its_last_rows():
    loss = queue_loss(q=4)
    x, labels = random_case(2, 9, 2, 3, 3)
    loss(x, labels)
    rows = torch.nn.functional.normalize(x.reshape(9, 2, 3), dim=2).reshape(9, 6)
    torch.testing.assert_close(loss.memory_embeddings[torch.arange(5, 9) % 4], rows[5:])


def test_warm_up_fills_without_mining_and_eval_does_neither():
    loss = queue_loss(q=20)
    loss.memory_active = False
    x, labels = random_case(3, 6, 2, 3, 2)
    loss(x, labels)
    loss(x, labels)
    assert int(loss.memory_seen) == 12 and int(loss.last_output.pos_idx.max()) < 6
    loss.eval()
    loss.memory_active = True
    loss(x, labels)
    assert int(loss.memory_seen) == 12 and int(loss.last_output.pos_idx.max()) < 6
    loss.train()
    x2, labels2 = random_case(4, 6, 2, 3, 2)
    got = loss(x2, labels2)
    memory = (loss.memory_embeddings[:12].clone(), loss.memory_labels[:12].clone())
    assert int(loss.memory_seen) == 18 and int(loss.last_output.pos_idx.max()) >= 6
    expected = multi_threshold_triplet_loss(x2, labels2, [0.2, 0.4], backend="reference", memory=memory)
    torch.testing.assert_close(got, expected.loss.float())


def test_state_dict_resumes_the_queue_exactly():
    batches = [random_case(s, 6, 2, 3, 3) for s in range(6)]
    whole = queue_loss(q=8)
    losses = [whole(x, labels) for x, labels in batches]
    first = queue_loss(q=8)
    for x, labels in batches[:3]:
        first(x, labels)
    resumed = queue_loss(q=8)
    resumed.load_state_dict(first.state_dict())
    assert {"memory_embeddings", "memory_labels", "memory_seen"} <= set(first.state_dict())
    for (x, labels), expected in zip(batches[3:], losses[3:]):
        assert torch.equal(resumed(x, labels), expected)
    assert torch.equal(resumed.memory_embeddings, whole.memory_embeddings)


def test_gradient_reaches_batch_rows_only():
    loss = queue_loss(q=8)
    loss(*random_case(0, 6, 2, 3, 2))
    x, labels = random_case(1, 6, 2, 3, 2)
    x.requires_grad_(True)
    loss(x, labels).backward()
    assert x.grad is not None and not loss.memory_embeddings.requires_grad


@pytest.mark.parametrize("bad, message", [
    (lambda m: (m[0][:, :5], m[1]), "memory rows"),
    (lambda m: (m[0], m[1][:3]), "memory labels"),
    (lambda m: (m[0], m[1].float()), "integer"),
    (lambda m: m[0], "pair of tensors"),
])
def test_bad_memory_is_refused_in_one_line(bad, message):
    x, labels = random_case(0, 4, 2, 3, 2)
    memory = memory_case(0, 5, 2, 3, 2, normalize=True)
    with pytest.raises((TypeError, ValueError), match=message):
        multi_threshold_triplet_loss(x, labels, [0.1, 0.2], memory=bad(memory))
    with pytest.raises(ValueError, match="memory_size"):
        MultiThresholdTripletLoss(memory_size=-1)
