"""Running studies: the protocol (folds or the official split), one run folder per cell,
fold and seed (resumable, shared between studies), τ* resolution, and the results each
report is written from.

    OUT/study.json                          what the folder was started with (checked on resume)
    OUT/runs/<run id>/seed-<s>/<fold>/      a training run: checkpoint, history, report, result.json
    OUT/<study>/report.md, results.json …   written by report.py

Every run folder follows the run-folder contract (muldml.training.runfolder): a run is done
when its result.json exists (written last) and records the settings asked for, runtime options
that change learning included (amp, gradient caching, sync-bn, processes); a folder made with
other settings is refused in one line unless --overwrite. An interrupted run resumes from its
checkpoint. The run id names the settings that differ from the preset, so cells of different
studies with the same settings (e.g. table2's τ = 0.45 and table3's S-Dual-Triplet at τ* = 0.45)
are one run.

Honest reporting: a fold's test images are used only for its final accuracy. Curves, the
inter-class distances of Fig. 3 and table2's choice of τ* use a validation subset: held-out
training subjects (cross-validation and splits without a separate validation set) or the
official validation split when the data also has a test split.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from muldml import io as atomic
from muldml.config import Config, Runtime, preset_config
from muldml.data.folder import Sample, originals
from muldml.errors import UserError
from muldml.protocol import Fold, Protocol, make_protocol
from muldml.regime import undifferentiated
from muldml.studies.definitions import STUDIES, Cell, Study
from muldml.training import runfolder
from muldml.training.runfolder import CHECKPOINT, RESULT

STUDY_FILE = "study.json"


@dataclass
class StudyContext:
    """Everything shared by the runs of one invocation."""

    out: Path
    classes: list[str]
    protocol: Protocol
    seeds: list[int]
    base: dict[str, Any]  # settings common to every cell (config file, quick mode, command line)
    runtime: Runtime = field(default_factory=Runtime)
    tau_star: float | None = None  # --tau-star
    dataset: str | None = None  # for the paper's values
    quick: bool = False
    progress: bool = True
    command: str = ""
    keep_checkpoints: bool = True
    overwrite: bool = False  # replace runs made with other settings instead of refusing
    done: dict[Path, dict] = field(default_factory=dict)

    def config(self, cell: Cell, tau_star: float | None, seed: int) -> Config:
        cfg = preset_config(cell.preset, **{**self.base, **cell.settings(tau_star), "seed": seed})
        cfg.classes = list(self.classes)
        return cfg


def study_outputs(out: Path, data: Path) -> list[Path]:
    """The folders a study writes, never to be read as its data: `out` itself, or, when the
    data lies in `out` (--demo's OUT/data, or --data equal to --out), its run folders and
    one folder per study."""
    from muldml.studies.definitions import NAMES

    out, data = Path(out).resolve(), Path(data).resolve()
    if data != out and out not in data.parents:
        return [out]
    return [out / "runs", *(out / name for name in NAMES)]


def run_id(cfg: Config, base: dict[str, Any]) -> str:
    """Folder name of a run: the preset and every setting that differs from the preset under
    the study's common settings (τ* always, for one-threshold presets)."""
    reference = preset_config(cfg.preset, **base).to_dict()
    own = cfg.to_dict()
    skip = {"classes", "seed", "preset"} | ({"num_slices"} if cfg.margin_mode == "range" else set())
    keys = {k for k in own if k not in skip and own[k] != reference[k]}
    if cfg.margin_mode == "star":
        keys.add("tau_star")
    return ",".join([cfg.preset] + [f"{k}={own[k]:g}" if isinstance(own[k], float) else f"{k}={own[k]}"
                                     for k in sorted(keys)])


def run_dir(ctx: StudyContext, cfg: Config, fold: Fold, seed: int) -> Path:
    return ctx.out / "runs" / run_id(cfg, ctx.base) / f"seed-{seed}" / fold.name


def read_result(path: Path, requested: dict | None = None) -> dict | None:
    """A finished run's result (None when absent or torn: the run is redone); see
    runfolder.read_result for `requested`."""
    return runfolder.read_result(path, requested)


def fingerprint(ctx: StudyContext, cfg: Config, fold: Fold) -> dict:
    """The settings fingerprint of one cell's run on `fold`."""
    from muldml.training import resolve_device

    return runfolder.fingerprint(cfg, ctx.runtime, resolve_device(ctx.runtime.device).type, fold.train)


def check_study_folder(out: Path, started: dict[str, Any]) -> None:
    """Record what the folder is started with; refuse to mix runs of other settings into it.
    Creates the folder (UserError when it cannot be written)."""
    from muldml.training import check_writable

    check_writable(out)
    path = out / STUDY_FILE
    if path.is_file():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            before = None
        if before is not None:
            changed = [k for k in started if k in before and before[k] != started[k]]
            if changed:
                raise UserError(f"{out} holds a study started with other {', '.join(changed)} "
                                f"({', '.join(f'{k}={before[k]!r}' for k in changed)}); use another --out")
    atomic.write_json(path, started)


def train_and_test(ctx: StudyContext, cfg: Config, fold: Fold, seed: int, out: Path, *,
                   track_incomplete: bool = False, keep: bool = False) -> dict:
    """Train one cell on `fold` (resuming), test the final model once, measure what the
    figures need on validation images, and write out/result.json last."""
    from muldml.evaluate import evaluate
    from muldml.studies.measures import embed, incomplete_rate, interclass_histograms
    from muldml.training import fit, model_from_checkpoint, resolve_device

    device = resolve_device(ctx.runtime.device)
    incomplete: list[dict] = []
    if track_incomplete:
        # Epoch by epoch: the rate of incomplete judgements needs each epoch's weights.
        progress_file = out / "incomplete.json"
        if progress_file.is_file():
            incomplete = json.loads(progress_file.read_text(encoding="utf-8"))
        for epoch in range(len(incomplete) + 1, cfg.epochs + 1):
            state = fit(cfg, fold.train, fold.val, out, ctx.runtime, resume=True, progress=ctx.progress,
                        stop_after=epoch, test_samples=fold.test, split_policy=f"{ctx.protocol.description}; {fold.name}")
            model, _ = model_from_checkpoint(state)
            incomplete.append({"epoch": epoch,
                               "train": incomplete_rate(model, originals(fold.train), cfg, device, seed),
                               "val": incomplete_rate(model, fold.val, cfg, device, seed)})
            atomic.write_json(progress_file, incomplete)
    state = fit(cfg, fold.train, fold.val, out, ctx.runtime, resume=True, progress=ctx.progress,
                test_samples=fold.test, split_policy=f"{ctx.protocol.description}; {fold.name}")
    # Quick mode skips each run's own report (its plots cost more than its training).
    tested = evaluate(state, fold.test, None if ctx.quick else out, device=ctx.runtime.device,
                      title=f"{cfg.preset}, seed {seed}, {fold.name}")
    model, _ = model_from_checkpoint(state)
    val_embeddings, val_labels = embed(model, fold.val, cfg, device)
    history = state["history"]
    result = {
        "run": run_id(cfg, ctx.base), "preset": cfg.preset, "seed": seed, "fold": fold.name,
        "accuracy": tested.metrics["accuracy"], "num_test": tested.metrics["num_samples"],
        "confusion": tested.metrics["confusion"], "classes": list(cfg.classes),
        "val_accuracy": history[-1].get("val_acc") if history else None, "num_val": len(fold.val),
        "num_train": len(fold.train), "epochs": len(history), "best_val_epoch": best_val_epoch(history),
        "undifferentiated": undifferentiated(history),
        "retrieval": merged_retrieval(tested.metrics),
        "interclass_val": interclass_histograms(val_embeddings, val_labels, cfg.num_slices),
        "incomplete": incomplete or None,
        "config": cfg.to_dict(),
    }
    runfolder.write_result(out, result)
    if not (ctx.keep_checkpoints or keep):
        (out / CHECKPOINT).unlink(missing_ok=True)
    return result


def merged_retrieval(metrics: dict) -> dict[str, float] | None:
    """Precision@1 and MAP@R of the merged embedding on the test images, from an evaluation's
    metrics (None when they could not be measured: see muldml.evaluate.embedding_metrics)."""
    merged = metrics.get("retrieval", {}).get("merged")
    if merged is None:
        return None
    return {"precision_at_1": merged["precision_at_1"], "map_at_r": merged["mean_average_precision_at_r"]}


def best_val_epoch(history: list[dict]) -> int | None:
    """The epoch with the highest validation accuracy (the earliest of ties): how long the
    model needed, judged on validation subjects, never on test images. None without validation."""
    scored = [(row["val_acc"], -row["epoch"]) for row in history if row.get("val_acc") is not None]
    return -max(scored)[1] if scored else None


def run_cell(ctx: StudyContext, study: Study, cell: Cell, fold: Fold, seed: int) -> dict:
    """The result of `cell` on `fold` with `seed`, training it unless a study did already."""
    tau = resolve_tau_star(ctx, fold, seed)[0] if cell.uses_tau_star else None
    chosen, _ = resolve_baseline(ctx, study, cell, fold, seed)
    if chosen:  # the grid point chosen on validation: the same run folder as its grid run
        cell = dataclasses.replace(cell, overrides=cell.overrides + tuple(chosen.items()))
    cfg = ctx.config(cell, tau, seed)
    out = run_dir(ctx, cfg, fold, seed)
    requested = fingerprint(ctx, cfg, fold)
    if out not in ctx.done:
        runfolder.check_folder(out, requested, ctx.overwrite)  # other settings: refuse, or clear with --overwrite
    result = ctx.done.get(out) or read_result(out, requested)
    # A run trained for another study may lack what this one needs: the per-epoch rate of
    # incomplete judgements (fig6) or its weights (fig7, after a quick run removed them).
    lacking = result is not None and ((study.figure == "fig6" and not result.get("incomplete")) or
                                      (study.keep_models and not (out / CHECKPOINT).is_file()))
    if result is None or lacking:
        if lacking:
            shutil.rmtree(out)
        if ctx.progress:
            print(f"{study.name}: training {out.relative_to(ctx.out)}")
        result = train_and_test(ctx, cfg, fold, seed, out, track_incomplete=study.figure == "fig6",
                                keep=study.keep_models)
    result["dir"] = str(out.relative_to(ctx.out))
    ctx.done[out] = result
    return result


def resolve_tau_star(ctx: StudyContext, fold: Fold, seed: int) -> tuple[float, str]:
    """τ* for the cells that take it, in this fold and seed, with where it came from:
    --tau-star; else table2's choice in this fold (highest validation accuracy, ties to the
    smaller τ), when all of table2's runs of this fold and seed are done in this folder; else
    the configuration's tau_star."""
    if ctx.tau_star is not None:
        return ctx.tau_star, "given (--tau-star)"
    table2 = STUDIES["table2"]
    scores = []
    for cell in table2.cells:
        result = read_result(run_dir(ctx, ctx.config(cell, None, seed), fold, seed))
        if result is None or result.get("val_accuracy") is None:
            break
        scores.append((-result["val_accuracy"], dict(cell.overrides)["tau_star"]))
    else:
        return min(scores)[1], "chosen in this fold by table2 on validation subjects (nested)"
    return ctx.config(Cell("", "s-dual-triplet"), None, seed).tau_star, "from the configuration (not chosen on this data)"


def resolve_baseline(ctx: StudyContext, study: Study, cell: Cell, fold: Fold, seed: int,
                     train: bool = True) -> tuple[dict[str, Any], str]:
    """A baseline cell's hyper-parameters in this fold and seed, with where they came from:
    its grid (muldml.baselines.selection) trained and chosen on validation subjects, the
    settings given explicitly being fixed; ({}, source) when nothing is searched (not a
    baseline, every field given, quick mode). train=False only reads finished runs (for
    the report): ({}, "not chosen yet") when one is missing."""
    from muldml.baselines.selection import SOURCE, choose, grid_points

    metric_loss = preset_config(cell.preset).metric_loss
    if metric_loss == "triplet":
        return {}, ""
    points = grid_points(metric_loss, fixed=set(ctx.base) | {k for k, _ in cell.overrides})
    if not points:
        return {}, "given (command line or configuration)"
    if ctx.quick:
        return {}, "preset defaults (quick mode searches no grid)"
    scores = []
    for point in points:
        grid_cell = dataclasses.replace(cell, overrides=cell.overrides + tuple(point.items()))
        if train:
            result = run_cell(ctx, study, grid_cell, fold, seed)
        else:
            result = read_result(run_dir(ctx, ctx.config(grid_cell, None, seed), fold, seed))
            if result is None:
                return {}, "not chosen yet (grid runs missing)"
        scores.append(result.get("val_accuracy"))
    return points[choose(points, scores)], SOURCE


def run_study(ctx: StudyContext, study: Study) -> dict[str, list[dict]]:
    """Train (or read back) every cell × seed × fold of `study`: {cell label: results}."""
    results: dict[str, list[dict]] = {}
    for cell in study.cells:
        results[cell.label] = [run_cell(ctx, study, cell, fold, seed)
                               for seed in ctx.seeds for fold in ctx.protocol.folds]
    return results
