"""The chunked PyTorch backend (kernels/triplet/chunked.py) against the float64 reference."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from triplet_checks import check_against_reference, loss_cases, random_case

from muldml.kernels.triplet.chunked import mine_batch_hard
from muldml.losses import multi_threshold_triplet_loss

@settings(max_examples=200)
@given(case=loss_cases())
def test_matches_reference_property(case):
    x, labels = random_case(case["seed"], case["batch"], case["num_slices"], case["slice_dim"],
                            case["num_classes"], case["singletons"], with_triplet=True)
    out = check_against_reference("torch", x, labels, case["margins"], case["slice_dim"], dual=case["dual"],
                                  normalize=case["normalize"], grad_scale=case["grad_scale"])
    assert int(out.num_triplets) > 0


def test_float64_gradcheck():
    x, labels = random_case(3, 10, 3, 4, 3, dtype=torch.float64)
    for dual in (True, False):
        for normalize in (True, False):
            fn = lambda e: multi_threshold_triplet_loss(  # noqa: E731
                e, labels, [0.2, 0.5, 0.9], 4, dual=dual, normalize=normalize, backend="torch").loss
            assert torch.autograd.gradcheck(fn, (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-7)


def test_chunked_mining_equals_one_chunk():
    x, labels = random_case(5, 97, 3, 11, 6)
    slices = torch.nn.functional.normalize(x.reshape(97, 3, 11).transpose(0, 1), dim=2)
    whole = mine_batch_hard(slices, labels, chunk_elements=1 << 30)
    for chunk in (1, 3 * 97 * 5, 3 * 97 * 40):
        pieces = mine_batch_hard(slices, labels, chunk_elements=chunk)
        assert torch.equal(pieces[0], whole[0]) and torch.equal(pieces[1], whole[1])


def test_half_precision_inputs_computed_in_float32():
    x, labels = random_case(7, 40, 2, 24, 4)
    for dtype in (torch.float16, torch.bfloat16):
        check_against_reference("torch", x.to(dtype), labels, [0.3, 0.6], 24, dual=True, normalize=True,
                                grad_rtol=1e-2)
