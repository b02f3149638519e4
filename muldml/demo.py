"""`muldml demo`: generated faces, cnn (softmax only) vs mul-dml, side by side.

Generates the built-in demo faces (identities that dominate pixel distance over
expressions, the problem of the paper's Fig. 1), splits them by subject, trains both
presets from scratch with the same settings and writes runs/demo/report.md with both
models' accuracies, confusion matrices and curves. Rerunning resumes and reuses the data.
"""
from __future__ import annotations

from pathlib import Path

from muldml.config import Runtime, preset_config
from muldml.data.classes import EXPRESSIONS
from muldml.data.folder import scan_folder
from muldml.evaluate import evaluate
from muldml.protocol import holdout
from muldml.report import Report
from muldml.training import check_writable, fit
from muldml.training.runfolder import write_result

DEMO_PRESETS = ("cnn", "mul-dml")
# From scratch on 64-px faces: a larger learning rate than the paper's fine-tuning 5e-6.
DEMO_SETTINGS = dict(lr=1e-3, batch_size=96, image_size=64, epochs=25, seed=0)
DEMO_VAL_FRACTION = 0.25
DEMO_SUBJECTS = 60
DEMO_IMAGES_PER_EXPRESSION = 3
# The generated faces: muldml demo's and muldml study --demo's.
DEMO_FACES = dict(num_subjects=DEMO_SUBJECTS, images_per_expression=DEMO_IMAGES_PER_EXPRESSION,
                  size=DEMO_SETTINGS["image_size"])


def run_demo(out: str | Path = "runs/demo", epochs: int | None = None, subjects: int | None = None,
             progress: bool = True, runtime: Runtime | None = None, overwrite: bool = False) -> dict[str, dict]:
    """Run the demo into `out` (each preset a run folder, resumed when its settings match;
    other settings are refused unless `overwrite`); returns each preset's validation metrics."""
    from muldml.data.synthetic import write_demo_dataset

    runtime = runtime or Runtime()
    out = Path(out)
    check_writable(out)
    data = write_demo_dataset(out / "data", **(DEMO_FACES | {"num_subjects": subjects or DEMO_SUBJECTS}),
                              seed=0, progress=progress)
    samples, classes = scan_folder(data, EXPRESSIONS)
    train_samples, val_samples = holdout(samples, DEMO_VAL_FRACTION, DEMO_SETTINGS["seed"])
    policy = f"subject-independent hold-out: {DEMO_VAL_FRACTION:.0%} of the identities (seed {DEMO_SETTINGS['seed']})"
    print(f"demo faces: {len(samples)} images of {len({s.subject for s in samples})} identities; "
          f"{len(train_samples)} train / {len(val_samples)} validation (subject-independent)")

    results, histories = {}, {}
    for preset in DEMO_PRESETS:
        settings = DEMO_SETTINGS | ({"epochs": epochs} if epochs else {})
        cfg = preset_config(preset, **settings)
        cfg.classes = list(classes)
        state = fit(cfg, train_samples, val_samples, out / preset, runtime, resume=True, overwrite=overwrite,
                    progress=progress, split_policy=policy)
        results[preset] = evaluate(state, val_samples, out / preset, device=runtime.device, title=f"demo: {preset}").metrics
        write_result(out / preset, {"command": "demo", "epochs": state["epoch"], "val_metrics": results[preset]})
        histories[preset] = state["history"]

    header = ["model", "accuracy", "macro-F1", "majority baseline", *classes]
    rows = [[preset, f"{100 * m['accuracy']:.1f}%" + (" ⚠" if m["accuracy"] <= m["majority_baseline"] else ""),
             f"{100 * m['macro_f1']:.1f}%", f"{100 * m['majority_baseline']:.1f}%",
             *(f"{100 * r:.0f}%" if r is not None else "—" for r in m["per_class_recall"].values())]
            for preset, m in results.items()]
    report = Report("muldml demo: softmax only vs Mul-DML on generated faces")
    report.paragraph(f"{len(train_samples)} training and {len(val_samples)} validation images, subject-independent; "
                     f"{DEMO_SETTINGS['image_size']}-px faces, {histories[DEMO_PRESETS[0]][-1]['epoch']} epochs from scratch, "
                     f"Adam lr {DEMO_SETTINGS['lr']}, batch {DEMO_SETTINGS['batch_size']}. Per-class columns are recall; "
                     "the majority baseline is the share of the most frequent class among the validation images "
                     "(⚠: a model at or below it).")
    report.table(header, rows)
    for preset in DEMO_PRESETS:
        report.heading(preset).image(f"{preset} confusion", f"{preset}/confusion.png")
        report.image(f"{preset} curves", f"{preset}/curves.png")
    report.write(out / "report.md")
    table = Report("").table(header, rows).lines[2:-1]
    print()
    print("\n".join(table))
    print(f"\nreport: {out / 'report.md'}")
    return results
