import pytest
import torch
from torchvision.models import resnet18

from muldml.errors import UserError
from muldml.model import MulDMLNet, load_init, vote


def small_input(batch=4, channels=3, size=32):
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(0))


def test_shapes_single_and_multitask():
    net = MulDMLNet(num_classes=7, num_slices=3, slice_dim=16).eval()
    out = net(small_input())
    assert out.embedding.shape == (4, 48) and out.logits.shape == (4, 7)
    multi = MulDMLNet(num_classes=7, num_slices=3, slice_dim=16, multitask=True).eval()
    out = multi(small_input())
    assert out.logits.shape == (3, 4, 7) and multi.predict(small_input()).shape == (4,)


def test_grayscale_is_replicated_to_three_channels():
    net = MulDMLNet(num_classes=3, num_slices=2, slice_dim=8).eval()
    gray = small_input(channels=1)
    torch.testing.assert_close(net(gray).logits, net(gray.repeat(1, 3, 1, 1)).logits)


def test_merged_embedding_equals_separate_slice_maps():
    net = MulDMLNet(num_classes=3, num_slices=4, slice_dim=8).eval()
    features = net.backbone(small_input())
    separate = torch.cat([layer(features) for layer in net.split_embedding()], dim=1)
    # Equal up to float rounding (the matmuls are blocked differently).
    torch.testing.assert_close(net.embedding(features), separate, rtol=1e-6, atol=1e-6)


def test_classifier_input_raw_vs_normalized():
    """Rescaling the embedding layer changes raw logits but not those of normalised slices."""
    x = small_input()
    for mode, should_change in (("raw", True), ("normalized", False)):
        net = MulDMLNet(num_classes=3, num_slices=2, slice_dim=8, classifier_input=mode).eval()
        before = net(x).logits
        net.embedding.weight.data *= 10
        net.embedding.bias.data *= 10
        changed = not torch.allclose(before, net(x).logits, atol=1e-4)
        assert changed == should_change, mode
    with pytest.raises(UserError, match="classifier_input"):
        MulDMLNet(3, classifier_input="sliced")


def test_majority_vote_with_probability_tie_break():
    # 3 slices, 2 samples, 3 classes. Sample 0: votes 2,2,0 → 2. Sample 1: votes 0,1,2 (tie) →
    # the class with the largest summed probability, here 1 (confident on slice 2).
    logits = torch.tensor([
        [[0.0, 0.0, 1.0], [3.0, 0.0, 0.0]],
        [[0.0, 0.0, 1.0], [0.0, 9.0, 0.0]],
        [[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]],
    ])
    assert vote(logits).tolist() == [2, 1]
    assert vote(logits[0]).tolist() == [2, 0]


def test_init_from_torchvision_and_muldml_state_dicts(tmp_path, capsys):
    reference = resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "tv.pt")
    net = MulDMLNet(num_classes=5, num_slices=2, slice_dim=8)
    missing, unexpected = load_init(net, tmp_path / "tv.pt")
    assert torch.equal(net.backbone.conv1.weight, reference.conv1.weight)
    assert any(k.startswith("embedding.") for k in missing) and unexpected == []  # fc.* is dropped
    # A muldml model with another class count: backbone and embedding load, classifier is new.
    other = MulDMLNet(num_classes=7, num_slices=2, slice_dim=8)
    torch.save(other.state_dict(), tmp_path / "m.pt")
    missing, unexpected = load_init(net, tmp_path / "m.pt")
    assert torch.equal(net.embedding.weight, other.embedding.weight)
    assert "classifier.weight" in unexpected


def test_init_bad_files(tmp_path):
    net = MulDMLNet(num_classes=3, num_slices=1, slice_dim=4)
    with pytest.raises(UserError, match="not found"):
        load_init(net, tmp_path / "nope.pt")
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="cannot load"):
        load_init(net, tmp_path / "cut.pt")
    torch.save({"foo": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="no backbone weights"):
        load_init(net, tmp_path / "foreign.pt")


def test_cosine_classifier_reads_the_normalised_slices_with_a_scale():
    from muldml.model import CosineClassifier, MulDMLNet

    torch.manual_seed(0)
    net = MulDMLNet(4, num_slices=2, slice_dim=8, classifier_input="cosine", cosine_scale=10.0, dropout=0.0).eval()
    x = torch.randn(3, 3, 32, 32)
    out = net(x)
    features = torch.nn.functional.normalize(out.embedding.view(3, 2, 8), dim=2).flatten(1)
    weight = torch.nn.functional.normalize(net.classifier.weight, dim=1)
    expected = 10.0 * torch.nn.functional.normalize(features, dim=1) @ weight.T
    torch.testing.assert_close(out.logits, expected)
    assert out.logits.abs().max() <= 10.0 + 1e-5  # |logit| ≤ s
    # Learnt scale: a parameter that receives a gradient; fixed: a buffer.
    out.logits.sum().backward()
    assert isinstance(net.classifier.log_scale, torch.nn.Parameter) and net.classifier.log_scale.grad is not None
    fixed = CosineClassifier(8, 4, scale=5.0, learn_scale=False)
    assert "log_scale" in dict(fixed.named_buffers()) and not any(n == "log_scale" for n, _ in fixed.named_parameters())
    assert float(fixed.scale) == pytest.approx(5.0)
    multitask = MulDMLNet(4, num_slices=2, slice_dim=8, classifier_input="cosine", multitask=True).eval()
    assert multitask(x).logits.shape == (2, 3, 4)


def test_inference_form_of_the_cosine_classifier_matches_the_network():
    from muldml.export import InferenceNet

    torch.manual_seed(1)
    net = MulDMLNet(4, num_slices=2, slice_dim=8, classifier_input="cosine").eval()
    x = small_input(size=32)
    torch.testing.assert_close(InferenceNet(net)(x)[0], net(x).logits)
