"""A study's report: results.json and report.md with the obtained accuracy (mean ± std over
folds × seeds) beside the paper's published value, macro-F1 and the majority-class baseline,
the paired statistics of each comparison the paper's claim rests on, the τ* used and where it
came from, the figures, the command and the settings of every cell."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from muldml import io as atomic
from muldml.baselines import baseline_weight
from muldml.report import Report
from muldml.studies import figures
from muldml.studies.definitions import Study
from muldml.studies.paper import CLAIMED_PAIRS, NOT_AVAILABLE, paper_tau_star, paper_value
from muldml.studies.runner import StudyContext, resolve_baseline, resolve_tau_star


def summarize(runs: list[dict]) -> dict[str, Any]:
    """Mean and sample std (%) of test and validation accuracy over runs (std 0 for one run),
    macro-F1, the majority baseline, and the mean (%) of the merged embedding's Precision@1 and
    MAP@R on the test images over the runs that measured them (retrieval_runs of them)."""
    def stats(values):
        values = [100 * v for v in values if v is not None]
        if not values:
            return None, None
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    from muldml.evaluate import metrics_from_confusion

    mean, std = stats([r["accuracy"] for r in runs])
    val_mean, val_std = stats([r.get("val_accuracy") for r in runs])
    best = [r["best_val_epoch"] for r in runs if r.get("best_val_epoch") is not None]
    per_run = [metrics_from_confusion(r["confusion"], r["classes"]) for r in runs]
    f1_mean, f1_std = stats([m["macro_f1"] for m in per_run])
    majority, _ = stats([m["majority_baseline"] for m in per_run])
    retrieval = [r["retrieval"] for r in runs if r.get("retrieval")]
    precision_at_1, _ = stats([r["precision_at_1"] for r in retrieval])
    map_at_r, _ = stats([r["map_at_r"] for r in retrieval])
    return {"mean": mean, "std": std, "n": len(runs), "val_mean": val_mean, "val_std": val_std,
            "best_val_epochs": best, "macro_f1_mean": f1_mean, "macro_f1_std": f1_std, "majority": majority,
            "precision_at_1_mean": precision_at_1, "map_at_r_mean": map_at_r, "retrieval_runs": len(retrieval),
            "accuracies": [r["accuracy"] for r in runs], "runs": sorted({r["dir"].rsplit("/", 2)[0] for r in runs})}


def paired_comparison(method: list[dict], reference: list[dict]) -> dict[str, Any]:
    """Paired difference of test accuracy (percentage points), method − reference, over the
    runs both have (same seed and fold, so the same test images): mean ± sample std, a 95%
    confidence interval (Student's t), the Wilcoxon signed-rank test and the paired t-test
    (scipy; p None when undefined: fewer than 2 pairs, every difference 0 for Wilcoxon, all
    differences equal for the t-test)
    and wins / ties / losses."""
    from scipy import stats

    by_key = {(r["seed"], r["fold"]): r["accuracy"] for r in reference}
    diffs = np.array([100 * (r["accuracy"] - by_key[r["seed"], r["fold"]]) for r in method
                      if (r["seed"], r["fold"]) in by_key])
    n = len(diffs)
    result: dict[str, Any] = {"n": n, "mean": float(diffs.mean()) if n else None,
                              "std": float(diffs.std(ddof=1)) if n > 1 else None, "ci95": None,
                              "wilcoxon_p": None, "t_test_p": None, "wins": int((diffs > 0).sum()),
                              "ties": int((diffs == 0).sum()), "losses": int((diffs < 0).sum())}
    if n > 1:
        half = float(stats.t.ppf(0.975, n - 1) * result["std"] / np.sqrt(n))
        result["ci95"] = [result["mean"] - half, result["mean"] + half]
        if result["std"] > 1e-9:  # identical differences (up to rounding): the t statistic is undefined
            result["t_test_p"] = float(stats.ttest_1samp(diffs, 0.0).pvalue)
        if np.any(diffs != 0):
            result["wilcoxon_p"] = float(stats.wilcoxon(diffs).pvalue)
    return result


def _pairs_section(study: Study, results: dict[str, list[dict]], report: Report) -> list[dict]:
    pairs = [(a, b) for a, b in CLAIMED_PAIRS.get(study.name, ()) if a in results and b in results]
    if not pairs:
        return []
    rows, out = [], []
    for a, b in pairs:
        c = paired_comparison(results[a], results[b])
        out.append({"method": a, "reference": b, **c})

        def num(x, digits=2):
            return "—" if x is None else f"{x:.{digits}f}"

        ci = "—" if c["ci95"] is None else f"[{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]"
        rows.append([f"{a} − {b}", c["n"], f"{num(c['mean'])} ± {num(c['std'])}", ci, num(c["wilcoxon_p"], 3),
                     num(c["t_test_p"], 3), f"{c['wins']} / {c['ties']} / {c['losses']}"])
    report.heading("Paired comparisons")
    report.paragraph("The comparisons the paper's claim rests on, paired by seed and fold (the same test images): "
                     "difference of test accuracy in points, mean ± std over pairs, its 95% confidence interval "
                     "(Student's t), the p-values of the Wilcoxon signed-rank test and of the paired t-test (scipy; "
                     "— where undefined: one pair, or no difference), and wins / ties / losses of the first model.")
    report.table(["comparison", "pairs", "difference (points)", "95% CI", "Wilcoxon p", "paired t p",
                  "wins / ties / losses"], rows)
    return out


def _pm(mean: float | None, std: float | None) -> str:
    return "—" if mean is None else f"{mean:.2f} ± {std:.2f}"


def _epochs(values: list[int]) -> str:
    if not values:
        return "—"
    return f"{int(np.median(values))} ({min(values)}–{max(values)})" if len(values) > 1 else str(values[0])


def _paper(value: float | None) -> str:
    return NOT_AVAILABLE if value is None else f"{value:.2f}"


def write_study_report(ctx: StudyContext, study: Study, results: dict[str, list[dict]], folder: Path) -> Path:
    """Write folder/results.json, folder/report.md and the plots; returns report.md."""
    folder.mkdir(parents=True, exist_ok=True)
    rel = Path("..") if folder != ctx.out else Path(".")
    cells = {cell.label: cell for cell in study.cells}
    rows = []
    for label, runs in results.items():
        cell = cells[label]
        rows.append({"label": label, "row": cell.row, "column": cell.column, "preset": cell.preset,
                     "settings": {**dict(cell.overrides), **({"tau_star": "τ*"} if cell.uses_tau_star else {})},
                     "paper": paper_value(study.name, ctx.dataset, label), **summarize(runs)})

    report = Report(f"{study.source}: {study.title}")
    report.paragraph(study.description)
    report.paragraph(f"Protocol: {ctx.protocol.description}. Seeds: {', '.join(map(str, ctx.seeds))}; each cell is "
                     f"{len(ctx.protocol.folds) * len(ctx.seeds)} run(s) (folds × seeds), reported as mean ± sample "
                     "standard deviation over them. Accuracy is the final epoch's on the test images: no epoch, "
                     "threshold or setting is chosen on them.")
    if ctx.quick:
        report.paragraph(f"**Quick mode** ({len(ctx.protocol.folds)} fold(s), settings below): tiny images and one "
                         "epoch, to check the pipeline end to end. These numbers say nothing about the method; "
                         "run without --quick for results.")
    report.paragraph(f"Dataset for the paper's values: {ctx.dataset or 'not named (pass --dataset)'}.")

    tau_rows = _tau_star_rows(ctx) if any(c.uses_tau_star for c in study.cells) or study.selects_tau_star else []
    summary: dict[str, Any] = {"study": study.name, "source": study.source, "dataset": ctx.dataset,
                               "protocol": ctx.protocol.description, "kind": ctx.protocol.kind,
                               "folds": [f.name for f in ctx.protocol.folds], "seeds": ctx.seeds, "quick": ctx.quick,
                               "command": ctx.command, "common_settings": ctx.base, "rows": rows}

    report.heading("Results")
    if study.grid:
        columns = list(dict.fromkeys(r["column"] for r in rows))
        grid_rows = list(dict.fromkeys(r["row"] for r in rows))
        by = {(r["row"], r["column"]): r for r in rows}
        majority = max((r["majority"] for r in rows if r["majority"] is not None), default=None)
        report.paragraph("Accuracy (%) on the test images, mean ± std; the paper's value in brackets. "
                         + ("" if majority is None else f"Majority-class baseline of the test images: {majority:.2f}%."))
        report.table(["", *columns], [[g, *(f"{_pm(by[g, c]['mean'], by[g, c]['std'])} ({_paper(by[g, c]['paper'])})"
                                          for c in columns)] for g in grid_rows])
    else:
        report.paragraph("Test accuracy and macro-F1 (scikit-learn) are mean ± std over runs; the majority-class "
                         "baseline is the share of the test images' most frequent class (a model that always "
                         "answers it scores that); ⚠ marks a model at or below it. Best epoch (val): per run, the "
                         "epoch with the highest validation accuracy on held-out training subjects, the epochs each "
                         "model needed (median, range over runs); the accuracy columns are still the last epoch's.")
        report.table(["model", "accuracy (%)", "paper (%)", "macro-F1 (%)", "majority baseline (%)",
                      "validation accuracy (%)", "runs", "best epoch (val)"],
                     [[r["label"], _pm(r["mean"], r["std"]) + (" ⚠" if r["mean"] is not None and r["majority"] is not None
                                                              and r["mean"] <= r["majority"] else ""),
                       _paper(r["paper"]), _pm(r["macro_f1_mean"], r["macro_f1_std"]),
                       "—" if r["majority"] is None else f"{r['majority']:.2f}", _pm(r["val_mean"], r["val_std"]), r["n"],
                       _epochs(r["best_val_epochs"])]
                      for r in rows])
    _retrieval_section(rows, report)
    _regime_warning(results, report)
    pairs = _pairs_section(study, results, report)
    if pairs:
        summary["paired"] = pairs
    if study.selects_tau_star:
        summary["tau_star"] = _nested_tau_star(ctx, study, results, report)
    elif tau_rows:
        report.heading("τ*")
        report.paragraph("The threshold of the one-threshold cells (marked τ*), per fold and seed:")
        report.table(["seed", "fold", "τ*", "source"], tau_rows)
        summary["tau_star"] = [dict(zip(("seed", "fold", "tau_star", "source"), r)) for r in tau_rows]

    baselines = _baseline_settings(results)
    if baselines:
        report.heading("Baseline hyper-parameters")
        report.paragraph("As trained (each run's config); λ multiplies the metric loss beside the softmax loss.")
        report.table(["cell", "settings"], [[label, ", ".join(f"{k} = {v:g}" for k, v in values.items())]
                                            for label, values in baselines.items()])
        summary["baseline_settings"] = baselines
        summary["baseline_choice"] = _baseline_choice(ctx, study, report)

    if study.name == "baselines":
        _loss_terms(ctx, results, folder, report)
    if study.figure is None or study.figure in ("fig3",):
        figures.plot_accuracy([r["label"] for r in rows], [r["mean"] or 0 for r in rows], [r["std"] or 0 for r in rows],
                              [r["paper"] for r in rows], folder / "accuracy.png", f"{study.source}: {study.title}")
        report.image("accuracy per cell", "accuracy.png")
    if study.figure:
        _figure(ctx, study, results, folder, report, summary)

    report.heading("Commands")
    report.paragraph(f"This report: `{ctx.command}`")
    holds = ("history.csv and result.json; quick mode keeps no checkpoint (but those a figure reads) and writes no "
             "per-run report" if ctx.quick else
             "checkpoint, history.csv, report.md with its confusion matrix and curves, result.json")
    report.paragraph(f"Each run is a folder `runs/<run>/seed-<s>/<fold>` ({holds}). Cells and their own settings on "
                     "top of the common ones below:")
    report.table(["cell", "preset", "own settings", "run folder"],
                 [[r["label"], r["preset"], json.dumps(r["settings"], ensure_ascii=False),
                   ", ".join(f"`{(rel / run).as_posix()}`" for run in r["runs"])] for r in rows])
    report.settings(ctx.base, "Common settings")
    atomic.write_json(folder / "results.json", summary)
    return report.write(folder / "report.md")


def _retrieval_section(rows: list[dict], report: Report) -> None:
    """Per model, the mean over runs of the merged embedding's Precision@1 and MAP@R (test images)."""
    def pct(value):
        return "—" if value is None else f"{value:.2f}"

    report.paragraph("Embedding retrieval on the test images (each image queries the others; pytorch-metric-learning): "
                     "Precision@1 and MAP@R of the merged embedding (every slice normalised, weighing the same), mean "
                     "over the runs that measured them; each run's report.md has them per slice.")
    report.table(["model", "Precision@1 (%)", "MAP@R (%)", "runs"],
                 [[r["label"], pct(r["precision_at_1_mean"]), pct(r["map_at_r_mean"]), f"{r['retrieval_runs']} of {r['n']}"]
                  for r in rows])


def _regime_warning(results: dict[str, list[dict]], report: Report) -> None:
    """The runs in which every slice stayed ≥ 99% active for most of training (muldml.regime)."""
    from muldml.regime import UNDIFFERENTIATED

    flagged = {label: sum(bool(r.get("undifferentiated")) for r in runs) for label, runs in results.items()}
    flagged = {label: n for label, n in flagged.items() if n}
    if flagged:
        report.paragraph(f"**Warning: {UNDIFFERENTIATED}** — in " + ", ".join(
            f"{n} of {len(results[label])} run(s) of {label}" for label, n in flagged.items())
            + " every slice's hinges stayed ≥ 99% active for most epochs, so the slices got the same gradients "
              "whatever their thresholds (each run's report.md shows its per-slice active fractions).")


def _loss_terms(ctx: StudyContext, results: dict[str, list[dict]], folder: Path, report: Report) -> None:
    """Every model's training loss terms per epoch (mean over runs): is the metric loss learning,
    and does it dwarf the cross-entropy?"""
    from muldml.plots import plot_loss_terms

    curves = {}
    for label, runs in results.items():
        histories = [h for h in (figures.read_history(ctx.out / r["dir"]) for r in runs) if h]
        if histories:
            length = min(len(h) for h in histories)
            curves[label] = {term: [float(np.mean([h[e][f"train_{term}"] for h in histories])) for e in range(length)]
                             for term in ("ce", "metric") if all(f"train_{term}" in h[0] for h in histories)}
    if curves:
        plot_loss_terms(curves, folder / "loss_terms.png", "Training loss terms")
        report.paragraph("Training cross-entropy (solid) and the weighted metric loss (dashed) per epoch, mean over "
                         "runs; each run's history.csv also holds the metric loss's share of the loss and of the "
                         "gradient at the embedding.")
        report.image("loss terms", "loss_terms.png")


def _baseline_settings(results: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Per cell trained with a baseline's metric loss: its hyper-parameters and λ."""
    out = {}
    for label, runs in results.items():
        cfg = runs[0]["config"]
        kind = cfg.get("metric_loss", "triplet")
        if kind == "triplet":
            continue
        values = {k: v for k, v in cfg.items() if k.startswith(f"{kind}_")}
        values["lam"] = baseline_weight(cfg["lam"])
        out[label] = values
    return out


def _baseline_choice(ctx: StudyContext, study: Study, report: Report) -> list[dict]:
    """Per baseline cell, fold and seed: the settings chosen on validation and their source."""
    from muldml.baselines.selection import GRIDS

    rows = []
    for cell in study.cells:
        for seed in ctx.seeds:
            for fold in ctx.protocol.folds:
                chosen, source = resolve_baseline(ctx, study, cell, fold, seed, train=False)
                if source:
                    rows.append({"cell": cell.label, "seed": seed, "fold": fold.name, "chosen": chosen, "source": source})
    if rows:
        grids = "; ".join(f"{name}: " + ", ".join(f"{k} ∈ {{{', '.join(f'{v:g}' for v in values)}}}"
                                                  for k, values in grid.items()) for name, grid in GRIDS.items())
        report.paragraph(f"Where the source below says so, a baseline's settings were chosen per fold and seed like "
                         f"τ*: every point of its grid ({grids}) is trained, and the one with the highest validation "
                         "accuracy on held-out training subjects is the baseline's result in that fold (settings "
                         "given explicitly are not searched).")
        report.table(["cell", "seed", "fold", "chosen", "source"],
                     [[r["cell"], r["seed"], r["fold"], ", ".join(f"{k} = {v:g}" for k, v in r["chosen"].items()) or "—",
                       r["source"]] for r in rows])
    return rows


def _tau_star_rows(ctx: StudyContext) -> list[list[Any]]:
    return [[seed, fold.name, *resolve_tau_star(ctx, fold, seed)] for seed in ctx.seeds for fold in ctx.protocol.folds]


def _nested_tau_star(ctx: StudyContext, study: Study, results: dict[str, list[dict]], report: Report) -> dict:
    """table2: τ* chosen per fold on validation subjects, and the test accuracy it gives."""
    taus = {cell.label: dict(cell.overrides)["tau_star"] for cell in study.cells}
    chosen, accuracies = [], []
    for seed in ctx.seeds:
        for fold in ctx.protocol.folds:
            runs = {label: next(r for r in rs if r["seed"] == seed and r["fold"] == fold.name)
                    for label, rs in results.items()}
            best = min(runs, key=lambda label: (-(runs[label]["val_accuracy"] or 0), taus[label]))
            chosen.append({"seed": seed, "fold": fold.name, "tau_star": taus[best],
                           "val_accuracy": runs[best]["val_accuracy"], "test_accuracy": runs[best]["accuracy"]})
            accuracies.append(runs[best]["accuracy"])
    counts = Counter(c["tau_star"] for c in chosen)
    mean = 100 * float(np.mean(accuracies))
    std = 100 * float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0
    paper = paper_tau_star(ctx.dataset)
    report.heading("τ* (nested)")
    report.paragraph("In each fold and seed, τ* is the τ with the highest validation accuracy on held-out training "
                     "subjects (ties to the smaller τ); the fold's test images play no part. The later tables "
                     "(table3, table4, table7, baselines) use each fold's own τ* when run in this folder.")
    report.table(["seed", "fold", "τ*", "validation accuracy (%)", "test accuracy at τ* (%)"],
                 [[c["seed"], c["fold"], f"{c['tau_star']:g}", f"{100 * c['val_accuracy']:.2f}",
                   f"{100 * c['test_accuracy']:.2f}"] for c in chosen])
    report.paragraph(f"Test accuracy with the nested τ*: **{mean:.2f} ± {std:.2f}%**. Most chosen τ*: "
                     f"{counts.most_common(1)[0][0]:g} ({counts.most_common(1)[0][1]} of {len(chosen)}). "
                     f"The paper's τ* for this dataset: {NOT_AVAILABLE if paper is None else f'{paper:g}'} (Table II).")
    return {"chosen": chosen, "nested_accuracy_mean": mean, "nested_accuracy_std": std,
            "most_chosen": counts.most_common(1)[0][0], "paper": paper}


def _pooled(runs: list[dict], key: str) -> list[int]:
    total = None
    for r in runs:
        counts = np.asarray(r[key][0], dtype=np.int64)
        total = counts if total is None else total + counts
    return total.tolist()


def _figure(ctx: StudyContext, study: Study, results: dict[str, list[dict]], folder: Path, report: Report,
            summary: dict) -> None:
    report.heading(study.source)
    name = study.figure
    if name == "fig3":
        taus = [dict(c.overrides)["tau_star"] for c in study.cells]
        hists = [_pooled(results[c.label], "interclass_val") for c in study.cells]
        figures.plot_interclass(taus, hists, folder / "fig3.png", "Inter-class distances on validation images")
        summary["interclass_val"] = {f"{t:g}": h for t, h in zip(taus, hists)}
        report.paragraph("Distances between validation images of different classes (pooled over folds and seeds; "
                         "unit-norm embedding, so distances lie in [0, 2]).")
        report.image("Fig. 3", "fig3.png")
    elif name == "fig6":
        curves: dict[tuple[str, float], dict[str, list[list[float]]]] = {}
        for cell in study.cells:
            kind = cell.row.split(",")[0]
            tau = dict(cell.overrides)["tau_star"]
            entry = curves.setdefault((kind, tau), {k: [] for k in ("train_loss", "val_loss", "train_incomplete", "val_incomplete")})
            for r in results[cell.label]:
                history = figures.read_history(ctx.out / r["dir"])
                entry["train_loss"].append([h.get("train_triplet_0") for h in history])
                entry["val_loss"].append([h.get("val_triplet_0") for h in history])
                entry["train_incomplete"].append([e["train"] for e in r.get("incomplete") or []])
                entry["val_incomplete"].append([e["val"] for e in r.get("incomplete") or []])
        figures.plot_training(curves, folder / "fig6.png", "Traditional vs dual triplet loss (mean over folds and seeds)")
        summary["curves"] = {f"{k} {t:g}": v for (k, t), v in curves.items()}
        report.paragraph("Top: triplet loss (before λ) per epoch, training (solid) and validation (dashed). Bottom: "
                         "rate of incomplete judgements, the share of batch-hard triplets with d(p*, n*) < d(a, p*), "
                         "measured after each epoch on the training and validation images (eval mode, random "
                         "batches of the training batch size).")
        report.image("Fig. 6", "fig6.png")
    elif name == "fig7":
        path = _neuron_maps(ctx, results[study.cells[0].label], folder)
        if path is None:
            report.paragraph("No trained model was found to draw the maps from (its checkpoint was removed).")
        else:
            report.paragraph("Rows: test images of the first fold (top block: one expression across subjects; "
                             "bottom block: one subject across expressions). Columns: 64 evenly spaced dimensions "
                             "of each L2-normalised slice as an 8×8 map (blue negative, red positive).")
            report.image("Figs. 7–8", path.name)
    elif name == "fig9":
        runs = results[study.cells[0].label]
        confusion = np.sum([np.array(r["confusion"]) for r in runs], axis=0)
        accuracy = float(np.trace(confusion) / max(confusion.sum(), 1))
        figures.plot_summed_confusion(confusion, runs[0]["classes"], folder / "fig9.png",
                                      f"Mul-DML, summed over {len(runs)} run(s): {100 * accuracy:.1f}%")
        summary["confusion"] = confusion.tolist()
        report.paragraph(f"Summed over {len(runs)} run(s); overall accuracy {100 * accuracy:.2f}%. Rows: true class, "
                         "cells: % of that class.")
        report.image("Fig. 9", "fig9.png")


def _neuron_maps(ctx: StudyContext, runs: list[dict], folder: Path) -> Path | None:
    from muldml.data.images import read_image
    from muldml.studies.measures import embed, neuron_maps
    from muldml.training import CHECKPOINT, load_checkpoint, model_from_checkpoint, resolve_device

    first = next((r for r in runs if (ctx.out / r["dir"] / CHECKPOINT).is_file()), None)
    if first is None:
        return None
    model, cfg = model_from_checkpoint(load_checkpoint(ctx.out / first["dir"]))
    fold = next(f for f in ctx.protocol.folds if f.name == first["fold"])
    chosen = _choose_images(fold.test, cfg.classes)
    if not chosen:
        return None
    samples = [s for s, _ in chosen]
    embeddings, _ = embed(model, samples, cfg, resolve_device(ctx.runtime.device))
    maps = neuron_maps(embeddings, cfg.num_slices)
    thumbs = [np.asarray(read_image(s.path, "L").resize((48, 48))) for s in samples]
    return figures.plot_neuron_maps(maps, thumbs, [label for _, label in chosen], folder / "fig7.png",
                                    f"Per-slice neuron maps of Mul-DML ({first['fold']}, seed {first['seed']})")


def _choose_images(samples, classes: list[str], most: int = 6) -> list[tuple[Any, str]]:
    """Up to `most` subjects showing the expression most subjects show, then the subject showing
    the most expressions, one image each (first in file order)."""
    with_subject = [s for s in samples if s.subject is not None]
    if not with_subject:
        return [(s, classes[s.label]) for s in samples[:most]]
    by_class: dict[int, dict[str, Any]] = {}
    by_subject: dict[str, dict[int, Any]] = {}
    for s in sorted(with_subject, key=lambda s: str(s.path)):
        by_class.setdefault(s.label, {}).setdefault(s.subject, s)
        by_subject.setdefault(s.subject, {}).setdefault(s.label, s)
    label = max(sorted(by_class), key=lambda c: len(by_class[c]))
    across_subjects = [(s, f"{classes[label]}, {subject}") for subject, s in sorted(by_class[label].items())[:most]]
    subject = max(sorted(by_subject), key=lambda k: len(by_subject[k]))
    across_expressions = [(s, f"{subject}, {classes[c]}") for c, s in sorted(by_subject[subject].items())]
    return across_subjects + across_expressions


def write_index(ctx: StudyContext, written: dict[str, Path]) -> Path:
    """OUT/report.md for `all`: one line per study with its report."""
    report = Report("muldml studies")
    report.paragraph(f"Protocol: {ctx.protocol.description}. Command: `{ctx.command}`.")
    report.table(["study", "report"], [[name, f"[{name}/report.md]({name}/report.md)"] for name in written])
    return report.write(ctx.out / "report.md")


