"""One training step (forward, backward, Adam) of cnn vs mul-dml at 64×64, batch 96, CPU.

Run: .venv/bin/python -m pytest bench/test_train_step.py
The paper's claim: the slices and their triplet losses add no cost. Target (not asserted):
a mul-dml step costs ≤ 1.05× a cnn step.
"""
import pytest
import torch

from muldml.config import preset_config
from muldml.training import build_model, build_triplet_loss
from muldml.training.loop import cross_entropy


@pytest.mark.parametrize("preset", ["cnn", "mul-dml"])
def test_train_step(benchmark, preset):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.manual_seed(0)
    cfg = preset_config(preset)
    cfg.classes = [str(i) for i in range(7)]
    model = build_model(cfg).train()
    triplet = build_triplet_loss(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(96, 3, 61, 61)  # 64-px faces, 61-px crops
    labels = torch.randint(0, 7, (96,))

    def step():
        out = model(images)
        loss = cross_entropy(out.logits, labels)
        if triplet is not None:
            loss = loss + triplet(out.embedding, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    benchmark.extra_info.update(preset=preset, batch=96, image=64, threads=torch.get_num_threads())
    benchmark.pedantic(step, rounds=15, warmup_rounds=2)
