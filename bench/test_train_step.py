"""One training step (forward, backward, Adam) of cnn vs mul-dml at 64×64, batch 96, CPU,
in fp32 and under bf16 autocast.

Run: .venv/bin/python -m pytest bench/test_train_step.py
The paper's claim: the slices and their triplet losses add no cost. Target (not asserted):
a mul-dml step costs ≤ 1.05× a cnn step. extra_info holds images/s.
"""
import pytest
import torch

from muldml.config import preset_config
from muldml.training import build_model, build_triplet_loss
from muldml.training.loop import Precision, train_step

BATCH = 96


@pytest.mark.parametrize("amp", ["fp32", "bf16"])
@pytest.mark.parametrize("preset", ["cnn", "mul-dml"])
def test_train_step(benchmark, preset, amp):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.manual_seed(0)
    cfg = preset_config(preset)
    cfg.classes = [str(i) for i in range(7)]
    model = build_model(cfg).train()
    triplet = build_triplet_loss(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(BATCH, 3, 61, 61)  # 64-px faces, 61-px crops
    labels = torch.randint(0, 7, (BATCH,))
    precision = Precision(torch.bfloat16 if amp == "bf16" else None)

    def step():
        train_step(model, triplet, images, labels, optimizer, precision)

    benchmark.extra_info.update(preset=preset, amp=amp, batch=BATCH, image=64, threads=torch.get_num_threads())
    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    benchmark.extra_info["images_per_s"] = BATCH / benchmark.stats.stats.mean
