"""Using a trained model in Python: classify and embed faces in photos or aligned crops.

    model = muldml.load_model("runs/mul-dml", device="cpu")
    records = model.predict([Image.open("group.jpg")])   # one FaceRecord per face found
    out = model.embed(aligned_faces)                      # (B, N·d) embedding, (B, N, d) slices

Photos go the way ``muldml prepare`` takes training images: converted to 8-bit RGB by
`muldml.data.images.to_rgb` (EXIF rotation, 16-bit, alpha, CMYK, palette), every face found by
MTCNN (`muldml.data.faces.FaceDetector.detect_faces`), each aligned by
`muldml.data.faces.align_face` at ``face_size`` (prepare's ``--size``, 236 by default as
in the paper); with ``detect=False`` the image is taken as an aligned face and cut with
`center_square`, as ``prepare --no-detect`` does. Crops are then classified with the
evaluation transform (`muldml.data.augment.eval_transform`: resize, centre crop,
normalise), exactly as evaluation reads a prepared folder.

Classes, image size, crop and the network's shape all come from the checkpoint; nothing
device-specific is read from it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from muldml.config import Config
from muldml.data.augment import crop_size, eval_transform
from muldml.data.classes import canonical_label
from muldml.data.images import to_rgb
from muldml.errors import UserError
from muldml.model import MulDMLNet, vote
from muldml.training.distributed import resolve_device

#: Side of the aligned face crop, pixels: prepare's default ``--size`` (the paper's 236).
FACE_SIZE = 236
#: Names of MTCNN's five landmarks, in its order.
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor]


@dataclass
class FaceRecord:
    """One face found in an image (or one image with no face, or one that could not be read).

    source: the file or the caller's name for the image; face: index of the face in its
    image (most probable first; -1 when there is none); status: "ok", "no_face" or
    "unreadable"; reason: why (empty for "ok"); box: (x0, y0, x1, y1) px and landmarks:
    (5, 2) px in the upright image (after its EXIF rotation), both None without detection;
    detector_probability: MTCNN's face probability; expression: the predicted class;
    probabilities: every class's probability (per-slice classifiers: their mean softmax);
    embedding: the (N·d,) embedding before normalisation, when asked for.
    """

    source: str
    face: int = -1
    status: str = "ok"
    reason: str = ""
    box: list[float] | None = None
    landmarks: list[list[float]] | None = None
    detector_probability: float | None = None
    expression: str | None = None
    probabilities: dict[str, float] | None = None
    embedding: list[float] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Embeddings:
    """embedding: (B, N·d) before normalisation (the paper's inference form g(x)·M);
    slices: (B, N, d), each slice L2-normalised as the triplet losses see it (Fig. 7)."""

    embedding: torch.Tensor
    slices: torch.Tensor


def as_pil(image: ImageLike) -> Image.Image:
    """A PIL image from a PIL image, an array or a tensor of pixels.

    Arrays: (H, W), (H, W, 1|3|4) of integers (uint8, uint16: kept as such, converted
    later like a 16-bit file) or floats in [0, 1]. Tensors: the same, or channels first
    (C, H, W) with C in 1, 3, 4.
    Raises UserError for anything else.
    """
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
            t = t.permute(1, 2, 0)
        image = t.numpy()
    if not isinstance(image, np.ndarray):
        raise UserError(f"cannot read an image from a {type(image).__name__}")
    array = image
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise UserError(f"an image array must be (H, W) or (H, W, 3|4), got shape {tuple(image.shape)}")
    if array.dtype.kind == "f":
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif array.dtype == np.uint16 and array.ndim == 2:
        return Image.fromarray(array)  # mode I;16, scaled to 8 bits by to_rgb as for a file
    elif array.dtype == np.bool_ or array.dtype.kind in "iu":
        if array.min(initial=0) < 0 or array.max(initial=0) > 255:
            peak = max(int(array.max()), 1)
            array = np.clip(array.astype(np.float64) * (255.0 / peak), 0, 255)
        array = array.astype(np.uint8)
    else:
        raise UserError(f"cannot read an image from an array of {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array))


def normalization(transform: v2.Transform) -> tuple[list[float], list[float]]:
    """(mean, std) per channel of the Normalize step inside an evaluation transform."""
    stack = [transform]
    while stack:
        t = stack.pop()
        if isinstance(t, v2.Normalize):
            return [float(m) for m in t.mean], [float(s) for s in t.std]
        stack.extend(getattr(t, "transforms", []))
    raise ValueError("the transform does not normalise")


class FERModel:
    """A trained Mul-DML network ready for photos: see the module doc.

    Attributes: classes (canonical names, `muldml.data.classes`, in the classifier's order), image_size (side images are
    resized to), crop (the network's input side), mean / std (normalisation per channel),
    face_size (side of the aligned crop), config, net (the MulDMLNet, in eval mode), device.
    """

    def __init__(self, net: MulDMLNet, cfg: Config, device: str | torch.device = "cpu",
                 face_size: int = FACE_SIZE, batch_size: int = 32) -> None:
        if not cfg.classes:
            raise UserError("the checkpoint names no classes")
        if face_size < 1 or batch_size < 1:
            raise UserError(f"face size and batch size must be >= 1, got {face_size} and {batch_size}")
        # Canonical names (happy → happiness), also for models trained before names were canonical.
        self.config, self.classes = cfg, [canonical_label(c) or c for c in cfg.classes]
        self.device = resolve_device(str(device))
        self.net = net.eval().to(self.device)
        self.face_size, self.batch_size = face_size, batch_size
        self.transform = eval_transform(cfg.image_size, cfg.crop)
        self.image_size = cfg.image_size
        self.crop = cfg.crop or crop_size(cfg.image_size)
        self.mean, self.std = normalization(self.transform)
        self._detector = None

    @property
    def detector(self):
        """MTCNN, built on first use (the crops-only paths never load it)."""
        if self._detector is None:
            from muldml.data.faces import FaceDetector

            self._detector = FaceDetector(str(self.device))
        return self._detector

    def tensors(self, faces: Sequence[ImageLike]) -> torch.Tensor:
        """Aligned faces → (B, 3, crop, crop) network input, by the evaluation transform."""
        return torch.stack([self.transform(to_rgb(as_pil(face))[0]) for face in faces]) if len(faces) else \
            torch.zeros(0, 3, self.crop, self.crop)

    @torch.no_grad()
    def classify(self, faces: Sequence[ImageLike]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Aligned faces → (probabilities (B, C), predicted class (B,), embedding (B, N·d)), on
        the CPU, in batches of ``batch_size``. Per-slice classifiers: mean softmax, majority vote."""
        probs, preds, embeds = [], [], []
        for start in range(0, len(faces), self.batch_size):
            out = self.net(self.tensors(faces[start : start + self.batch_size]).to(self.device))
            logits = out.logits.float()
            p = logits.softmax(-1)
            probs.append((p.mean(0) if logits.dim() == 3 else p).cpu())
            preds.append(vote(logits).cpu())
            embeds.append(out.embedding.float().cpu())
        if not probs:
            n = self.net.num_slices * self.net.slice_dim
            return torch.zeros(0, len(self.classes)), torch.zeros(0, dtype=torch.long), torch.zeros(0, n)
        return torch.cat(probs), torch.cat(preds), torch.cat(embeds)

    def embed(self, faces: Sequence[ImageLike] | torch.Tensor) -> Embeddings:
        """Aligned faces (PIL images, arrays or tensors of pixels; or one (B, C, H, W) tensor)
        → their embedding (B, N·d) and normalised slices (B, N, d): for retrieval and the
        paper's Fig. 7 (t-SNE of the slices)."""
        if isinstance(faces, torch.Tensor) and faces.dim() == 4:
            faces = list(faces)
        _, _, embedding = self.classify(faces)
        return Embeddings(embedding, F.normalize(self.net.slices(embedding), dim=2))

    def predict(self, images: Sequence[ImageLike] | ImageLike, detect: bool = True, embeddings: bool = False,
                sources: Sequence[str] | None = None) -> list[FaceRecord]:
        """Classify every face of each image; returns one FaceRecord per face, and one with
        status "no_face" for an image where none is found.

        images: PIL images, arrays or tensors of whole photos, or of aligned faces with
        ``detect=False``. sources: a name per image for the records (default "image <i>").
        embeddings: also return each face's embedding.
        """
        from muldml.data.faces import align_face, center_square

        if isinstance(images, (Image.Image, np.ndarray)) or (isinstance(images, torch.Tensor) and images.dim() < 4):
            images = [images]
        sources = list(sources) if sources is not None else [f"image {i}" for i in range(len(images))]
        if len(sources) != len(images):
            raise UserError(f"{len(sources)} source name(s) for {len(images)} image(s)")
        pictures = [to_rgb(as_pil(img))[0] for img in images]
        records: list[FaceRecord] = []
        crops = []
        if detect:
            for source, picture, found in zip(sources, pictures, self.detector.detect_faces(pictures)):
                if not found.faces:
                    reason = found.error or f"no face found ({picture.size[0]}×{picture.size[1]} px)"
                    records.append(FaceRecord(source, status="no_face", reason=reason))
                for k, face in enumerate(found.faces):
                    record = FaceRecord(source, k, box=[float(v) for v in face.box],
                                        landmarks=face.landmarks.astype(float).tolist(),
                                        detector_probability=face.probability)
                    try:
                        crops.append(align_face(picture, face.landmarks, self.face_size))
                    except Exception as e:  # degenerate landmarks: this face only
                        record.status, record.reason = "no_face", f"cropping failed: {e.__class__.__name__}: {e}"
                    records.append(record)
        else:
            records = [FaceRecord(source, 0) for source in sources]
            crops = [center_square(picture, self.face_size) for picture in pictures]
        probs, preds, embeds = self.classify(crops)
        faces = iter(range(len(crops)))
        for record in records:
            if record.status != "ok":
                continue
            i = next(faces)
            record.expression = self.classes[int(preds[i])]
            record.probabilities = {c: float(p) for c, p in zip(self.classes, probs[i])}
            if embeddings:
                record.embedding = embeds[i].tolist()
        return records


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu", face_size: int = FACE_SIZE,
               batch_size: int = 32) -> FERModel:
    """A trained model from a run folder or checkpoint file, ready for `predict` and `embed`.

    Loads with ``torch.load(weights_only=True)``: the file runs no code. Raises UserError
    (one line) for a missing file, a file that is not a muldml checkpoint, or one written by a
    newer muldml.
    """
    from muldml.training import load_checkpoint, model_from_checkpoint

    net, cfg = model_from_checkpoint(load_checkpoint(checkpoint))
    return FERModel(net, cfg, device, face_size, batch_size)
