"""Why the baselines underfit at the triplet loss's weight, on the built-in demo faces.

    OMP_NUM_THREADS=1 python scripts/baseline_check.py [--seeds 3]

1. At initialisation (one batch of 96 faces, 32 px, train mode): the norm of each loss
   term's gradient at the embedding, cross-entropy against λ·Circle for γ ∈ {80, 32} and
   λ ∈ {0.5, 0.05}, and λ·HIST.
2. Learning speed: one batch of 28 faces (4 identities × 7 expressions), ten Adam steps
   (lr 1e-3) from the same initialisation; the training accuracy averaged over steps 6–10
   (the measure of tests/baselines/test_learning.py) per seed, for softmax alone and each
   baseline at λ = 0.05 and λ = 0.5.
"""
from __future__ import annotations

import argparse
import tempfile

import torch

from muldml.config import preset_config
from muldml.data.augment import eval_transform, train_transform
from muldml.data.folder import FaceDataset, scan_folder
from muldml.data.synthetic import write_demo_dataset
from muldml.training.loop import cross_entropy, train_step
from muldml.training.run import build_model, build_triplet_loss


def _batch(folder, subjects, per_expression, transform, count=None):
    data = write_demo_dataset(folder, num_subjects=subjects, images_per_expression=per_expression, size=32, seed=0,
                              progress=False)
    samples, classes = scan_folder(data)
    faces = FaceDataset(samples, transform)
    order = torch.randperm(len(faces), generator=torch.Generator().manual_seed(0))[:count]
    return (torch.stack([faces[int(i)][0] for i in order]), torch.tensor([samples[int(i)].label for i in order]),
            classes)


def gradients(folder) -> None:
    images, labels, classes = _batch(folder + "/g", 20, 2, train_transform(32, None), 96)
    for preset, settings in (("circle", dict(circle_gamma=80.0, lam=0.5)), ("circle", dict(circle_gamma=80.0, lam=0.05)),
                             ("circle", dict(circle_gamma=32.0, lam=0.5)), ("circle", dict(circle_gamma=32.0, lam=0.05)),
                             ("hist", dict(lam=0.5)), ("hist", dict(lam=0.05))):
        cfg = preset_config(preset, image_size=32, **settings)
        cfg.classes = list(classes)
        torch.manual_seed(0)
        model, metric_loss = build_model(cfg).train(), build_triplet_loss(cfg)
        out = model(images)
        terms = (cross_entropy(out.logits, labels), metric_loss(out.embedding, labels))
        g_ce, g_metric = (torch.autograd.grad(t, out.embedding, retain_graph=True)[0].norm() for t in terms)
        values = [float(t.detach()) for t in terms]
        print(f"{preset} {settings}: loss CE {values[0]:.2f}, metric {values[1]:.2f}; gradient at the "
              f"embedding CE {float(g_ce):.3f}, metric {float(g_metric):.3f} ({float(g_metric / g_ce):.2f}× CE)")


def learning_speed(folder, seeds: int) -> None:
    images, labels, classes = _batch(folder + "/s", 4, 1, eval_transform(32, 32))
    for preset, lam in (("cnn", None), ("circle", 0.05), ("circle", 0.5), ("hist", 0.05), ("hist", 0.5)):
        scores = []
        for seed in range(seeds):
            cfg = preset_config(preset, image_size=32, crop=32, lr=1e-3, lam=lam)
            cfg.classes = list(classes)
            torch.manual_seed(seed)
            model, metric_loss = build_model(cfg), build_triplet_loss(cfg)
            optimizer = torch.optim.Adam([*model.parameters(), *(metric_loss.parameters() if metric_loss else [])],
                                         lr=cfg.lr)
            accuracy = [float((train_step(model, metric_loss, images, labels, optimizer).logits.argmax(1) == labels)
                              .float().mean()) for _ in range(10)]
            scores.append(sum(accuracy[5:]) / 5)
        print(f"{preset}{'' if lam is None else f' λ={lam}'}: training accuracy, steps 6–10, per seed: "
              + ", ".join(f"{s:.2f}" for s in scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        gradients(folder)
        learning_speed(folder, args.seeds)


if __name__ == "__main__":
    main()
