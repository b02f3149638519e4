"""`muldml export`: a trained model as one portable file (ONNX or TorchScript).

    muldml export --checkpoint RUN --format onnx|torchscript --out FILE [--embedding]

The exported network is the paper's inference form: the N slice maps M_1 … M_N are one
embedding matrix M = [M_1 … M_N] (one linear layer), with no dropout. Input: ``images``
(B, 3, crop, crop) float32, pixels in [0, 1] normalised by (x − mean)/std per channel;
the batch dimension B is dynamic. Outputs, in order:

    one classifier:        logits (B, C)
    per-slice classifiers: slice_logits (N, B, C), vote (B,) int64 (majority vote over
                           slices, ties broken by summed probabilities)
    with --embedding:      … and embedding (B, N·d), before normalisation

Metadata (class names, input size, the resize before the centre crop, normalisation,
output names, slice shape, aligned face size) goes into the ONNX file's metadata_props
(each value a JSON string) and, for TorchScript, into FILE.json beside the file and into
the archive as ``extra/metadata.json``.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from muldml import io as atomic
from muldml.errors import UserError
from muldml.inference import FACE_SIZE, FERModel
from muldml.model import MulDMLNet, vote

FORMATS = ("onnx", "torchscript")
OPSET = 18


class InferenceNet(nn.Module):
    """A MulDMLNet in its inference form (see the module doc): same weights, no dropout,
    the slices one linear layer, outputs a tuple of tensors (see `output_names`)."""

    def __init__(self, net: MulDMLNet, embedding: bool = False) -> None:
        super().__init__()
        self.backbone, self.embedding = net.backbone, net.embedding  # embedding: M = [M_1 … M_N]
        self.num_slices, self.slice_dim = net.num_slices, net.slice_dim
        self.normalized, self.multitask = net.normalizes_slices, net.multitask
        self.classifiers = net.classifiers if net.multitask else nn.ModuleList([net.classifier])
        self.with_embedding = embedding
        self.eval()

    def output_names(self) -> list[str]:
        names = ["slice_logits", "vote"] if self.multitask else ["logits"]
        return names + (["embedding"] if self.with_embedding else [])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """images: (B, 3, crop, crop) normalised → the outputs named by output_names()."""
        embedding = self.embedding(self.backbone(images))
        features = embedding.view(-1, self.num_slices, self.slice_dim)
        if self.normalized:
            features = F.normalize(features, dim=2)
        if self.multitask:
            logits = torch.stack([head(features[:, i]) for i, head in enumerate(self.classifiers)])
            outputs: tuple[torch.Tensor, ...] = (logits, vote(logits))
        else:
            outputs = (self.classifiers[0](features.flatten(1)),)
        return outputs + (embedding,) if self.with_embedding else outputs


def metadata(model: FERModel, net: InferenceNet) -> dict[str, Any]:
    """What a deployment needs to feed and read the exported network."""
    cfg = model.config
    return {
        "format": "muldml",
        "classes": model.classes,
        "input_names": ["images"],
        "input_shape": ["batch", 3, model.crop, model.crop],
        "resize": model.image_size,
        "crop": model.crop,
        "mean": model.mean,
        "std": model.std,
        "pixel_scale": "[0, 1] before normalisation",
        "output_names": net.output_names(),
        "num_slices": cfg.num_slices,
        "slice_dim": cfg.slice_dim,
        "classifier_input": cfg.classifier_input,
        "multitask": cfg.multitask,
        "preset": cfg.preset,
        "face_size": model.face_size,
    }


def example_input(model: FERModel, batch: int = 2) -> torch.Tensor:
    """Random normalised images (B, 3, crop, crop): the tracing input and the equality check's."""
    return torch.randn(batch, 3, model.crop, model.crop, generator=torch.Generator().manual_seed(0))


def onnx_bytes(net: InferenceNet, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    """The ONNX model (torch.export-based exporter, dynamic batch) with `meta` in its metadata_props."""
    try:
        import onnx  # noqa: F401  (the exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise UserError(f"ONNX export needs the onnx and onnxscript packages ({e.name} is missing): "
                        "pip install -e '.[export]'") from None
    program = torch.onnx.export(net, (example,), dynamo=True, input_names=["images"],
                                output_names=net.output_names(), opset_version=OPSET, verbose=False,
                                dynamic_shapes=({0: torch.export.Dim("batch")},))
    proto = program.model_proto
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return proto.SerializeToString()


def torchscript_bytes(net: InferenceNet, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    """The traced TorchScript archive, `meta` inside as extra/metadata.json."""
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch marks TorchScript deprecated; it still loads everywhere
        traced = torch.jit.trace(net, (example,), check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={"metadata.json": json.dumps(meta, indent=1)})
    return buffer.getvalue()


def export(model: FERModel, out: str | Path, fmt: str, embedding: bool = False) -> list[Path]:
    """Write `model` to `out` as ONNX or TorchScript (see the module doc); returns the files
    written (TorchScript: the archive and its metadata JSON). Atomic; UserError on a bad format."""
    if fmt not in FORMATS:
        raise UserError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    net = InferenceNet(copy.deepcopy(model.net).cpu(), embedding)  # the model itself stays where it is
    example = example_input(model)
    meta = metadata(model, net)
    if fmt == "onnx":
        data = onnx_bytes(net, example, meta)
        return [atomic.atomic_write(out, lambda f: f.write(data))]
    data = torchscript_bytes(net, example, meta)
    side = out.with_name(out.name + ".json")
    return [atomic.atomic_write(out, lambda f: f.write(data)), atomic.write_json(side, meta)]


def run(args: argparse.Namespace) -> int:
    from muldml.inference import load_model
    from muldml.training import check_writable

    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name (e.g. {out / ('model.' + args.format)})")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    check_writable(out.parent)
    model = load_model(args.checkpoint, "cpu", args.face_size)
    written = export(model, out, args.format, args.embedding)
    print(f"exported {model.config.preset} ({len(model.classes)} classes, input (B, 3, {model.crop}, {model.crop})) "
          f"to {', '.join(map(str, written))}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `muldml export` on the CLI's subparsers."""
    p = subparsers.add_parser("export", help="write a trained model as ONNX or TorchScript")
    p.add_argument("--checkpoint", required=True, help="run folder or checkpoint file")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--out", required=True, help="file to write (TorchScript: FILE.json beside it holds the metadata)")
    p.add_argument("--embedding", action="store_true", help="also output the (B, N·d) embedding")
    p.add_argument("--face-size", type=int, default=FACE_SIZE,
                   help="side the training faces were aligned to (prepare --size), recorded in the metadata")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(run=run)
    return p
