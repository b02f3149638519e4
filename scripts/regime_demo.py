"""Where do the thresholds matter? Mul-DML against Mul-DML-Same on the built-in demo faces,
under the settings the regime depends on (triplet weight λ, cosine classifier, epochs).

    OMP_NUM_THREADS=1 python scripts/regime_demo.py --out runs/regime [--epochs 10] [--variants NAME ...]

Each variant trains both presets on the same subject-independent split (25% of the
identities held out for validation), from scratch, with one CPU thread. Written to OUT:
regime.json (per run: validation accuracy per epoch, the last epoch's per-slice active
fractions and hinge margins, the gradient share of the triplet term, the mean off-diagonal
linear CKA between slices on the validation images) and regime.md, a table of the same.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from muldml import io as atomic
from muldml.config import Runtime, preset_config
from muldml.data.folder import scan_folder
from muldml.data.splits import subject_holdout
from muldml.data.synthetic import write_demo_dataset
from muldml.diversity import slice_cka
from muldml.regime import undifferentiated
from muldml.report import Report
from muldml.studies.measures import embed
from muldml.studies.runner import best_val_epoch
from muldml.training import fit, model_from_checkpoint

FACES = dict(num_subjects=40, images_per_expression=3, size=32)
COMMON = dict(image_size=32, batch_size=32, lr=1e-3, seed=0)
VARIANTS = {  # name → settings on top of COMMON, for both presets
    "default": {},
    "lambda-0.5": {"lam": 0.5},
    "cosine": {"classifier_input": "cosine"},
    "cosine-lambda-0.5": {"classifier_input": "cosine", "lam": 0.5},
}
PRESETS = ("mul-dml", "mul-dml-same")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    data = write_demo_dataset(out / "data", seed=0, progress=False, **FACES)
    samples, classes = scan_folder(data)
    train_idx, val_idx = subject_holdout(samples, val_fraction=0.25, seed=0)
    train, val = [samples[i] for i in train_idx], [samples[i] for i in val_idx]
    results = json.loads((out / "regime.json").read_text()) if (out / "regime.json").is_file() else {}
    for variant in args.variants:
        for preset in PRESETS:
            key = f"{variant}/{preset}"
            cfg = preset_config(preset, epochs=args.epochs, **COMMON, **VARIANTS[variant])
            cfg.classes = list(classes)
            state = fit(cfg, train, val, out / variant / preset, Runtime(num_workers=0, device="cpu"), resume=True,
                        progress=False)
            history = state["history"]
            model, _ = model_from_checkpoint(state)
            cka = slice_cka(embed(model, val, cfg, torch.device("cpu"))[0], cfg.num_slices)
            off = cka[~torch.eye(cfg.num_slices, dtype=torch.bool)]
            last = history[-1]
            results[key] = {
                "settings": VARIANTS[variant], "epochs": len(history), "margins": cfg.margins,
                "val_acc": [row["val_acc"] for row in history], "best_val_epoch": best_val_epoch(history),
                "active": [last[f"train_active_{i}"] for i in range(cfg.num_slices)],
                "margin": [last[f"train_margin_{i}"] for i in range(cfg.num_slices)],
                "grad_metric_share": last["train_grad_metric_share"],
                "mean_cka_between_slices": float(off.mean()), "undifferentiated": undifferentiated(history),
            }
            atomic.write_json(out / "regime.json", results)
            print(key, json.dumps({k: results[key][k] for k in ("val_acc", "active", "mean_cka_between_slices")}),
                  flush=True)
    report = Report("Threshold regime on the demo faces")
    report.paragraph(f"{len(train)} training / {len(val)} validation faces (subject-independent), {FACES['size']} px, "
                     f"from scratch, one seed, settings {COMMON}. Active fractions and margins: the last epoch's "
                     "training batches; slice CKA: mean off-diagonal linear CKA on the validation faces.")
    report.table(["run", "epochs", "val acc (last)", "best val (epoch)", "active per slice (τ ascending, %)",
                  "mean d(a,n*) − d(a,p*)", "triplet grad share", "slice CKA", "warning"],
                 [[key, r["epochs"], f"{100 * r['val_acc'][-1]:.1f}", f"{100 * max(r['val_acc']):.1f} ({r['best_val_epoch']})",
                   " ".join(f"{100 * a:.0f}" for a in r["active"]), " ".join(f"{m:.2f}" for m in r["margin"]),
                   f"{100 * r['grad_metric_share']:.0f}%", f"{r['mean_cka_between_slices']:.2f}",
                   "yes" if r["undifferentiated"] else "no"] for key, r in results.items()])
    report.write(out / "regime.md")


if __name__ == "__main__":
    main()
