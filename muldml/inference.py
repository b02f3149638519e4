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
normalise), exactly as evaluation reads a prepared folder. Test-time augmentation
(``tta``, `TTA_MODES`) averages the class probabilities over views of each face: the centre
crop and its mirror image ("flip"), or the four corner and centre crops and their mirror
images ("ten-crop"), as DAN and POSTER report; `tta_transform` and `classify_views` are the
one place this happens, for predict and evaluate alike.

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
from torchvision.transforms.v2 import functional as TF

from muldml.config import Config
from muldml.data.augment import crop_box, crop_size, eval_transform
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
#: Test-time augmentation: views whose class probabilities are averaged (see `tta_views`).
TTA_MODES = ("none", "flip", "ten-crop")
TTA_VIEWS = {"none": 1, "flip": 2, "ten-crop": 10}


def check_tta(tta: str) -> str:
    """`tta` when it names a mode of `TTA_MODES`; raises UserError otherwise."""
    if tta not in TTA_MODES:
        raise UserError(f"unknown test-time augmentation {tta!r}; one of {', '.join(TTA_MODES)}")
    return tta


def tta_views(image: torch.Tensor, crop: int, tta: str = "none") -> torch.Tensor:
    """The views of a resized, normalised image (..., 3, S, S) → (..., V, 3, crop, crop).

    none: the centre crop (`muldml.data.augment.crop_box`, the evaluation crop; V = 1);
    flip: it and its horizontal mirror (V = 2); ten-crop: torchvision's ``ten_crop`` — the
    four corners, the centre and the mirror of each (V = 10; its centre box is rounded, so
    for an odd S − crop it sits one pixel right/below the evaluation crop).
    """
    check_tta(tta)
    if tta == "ten-crop":
        return torch.stack(TF.ten_crop(image, [crop, crop]), dim=-4)
    left, top, right, bottom = crop_box(image.shape[-1], image.shape[-2], crop, "center")
    centre = image[..., top:bottom, left:right]
    views = [centre, TF.horizontal_flip(centre)] if tta == "flip" else [centre]
    return torch.stack(views, dim=-4)


class TTAViews(torch.nn.Module):
    """`tta_views` as a transform step (a module, so that loader workers can pickle it)."""

    def __init__(self, crop: int, tta: str) -> None:
        super().__init__()
        self.crop, self.tta = crop, check_tta(tta)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return tta_views(image, self.crop, self.tta)


def tta_transform(image_size: int, crop: int | None = None, tta: str = "none") -> v2.Compose:
    """PIL image → (V, 3, crop, crop): resized to image_size², normalised, then its views
    (`tta_views`). With "none" the one view equals `eval_transform`'s output exactly."""
    crop = crop or crop_size(image_size)
    # A crop of the whole image_size² is no crop: eval_transform's resize and normalisation only.
    return v2.Compose([eval_transform(image_size, image_size), TTAViews(crop, tta)])


@torch.no_grad()
def classify_views(net: MulDMLNet, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Views (B, V, 3, H, W) → (probabilities (B, C), predicted class (B,), embedding (B, N·d)),
    all float32 on the views' device.

    Each view's softmax is averaged over the V views (for per-slice classifiers, per
    slice; the probabilities are then the mean over slices and the class their majority
    vote, `muldml.model.vote`). The embedding is the mean over views. With V = 1 this is
    the plain forward pass: the class comes from the logits themselves.
    """
    b, v = views.shape[:2]
    out = net(views.flatten(0, 1))
    logits = out.logits.float()
    embedding = out.embedding.float().unflatten(0, (b, v)).mean(1)
    if v == 1:
        p = logits.softmax(-1)
        return (p.mean(0) if logits.dim() == 3 else p), vote(logits), embedding
    p = logits.softmax(-1).unflatten(-2, (b, v)).mean(-2)  # (B, C) or (N, B, C)
    # log p as logits: vote's argmax and its softmax tie-break read the averaged probabilities.
    return (p.mean(0) if p.dim() == 3 else p), vote(p.log()), embedding


@dataclass
class FaceRecord:
    """One face found in an image (or one image with no face, or one that could not be read).

    source: the file or the caller's name for the image; face: index of the face in its
    image (most probable first; -1 when there is none); status: "ok", "no_face" or
    "unreadable"; reason: why (empty for "ok"); box: (x0, y0, x1, y1) px and landmarks:
    (5, 2) px in the upright image (after its EXIF rotation), both None without detection;
    detector_probability: MTCNN's face probability; expression: the predicted class;
    probabilities: every class's probability (per-slice classifiers: their mean softmax);
    embedding: the (N·d,) embedding before normalisation, when asked for; tta: the
    test-time augmentation the probabilities were averaged over (`TTA_MODES`).
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
    tta: str = "none"

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
    face_size (side of the aligned crop), config, net (the MulDMLNet, in eval mode), device,
    tta (test-time augmentation, one of `TTA_MODES`).
    """

    def __init__(self, net: MulDMLNet, cfg: Config, device: str | torch.device = "cpu",
                 face_size: int = FACE_SIZE, batch_size: int = 32, tta: str = "none") -> None:
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
        self.tta = check_tta(tta)
        self.views = tta_transform(cfg.image_size, cfg.crop, tta)
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

    def view_tensors(self, faces: Sequence[ImageLike]) -> torch.Tensor:
        """Aligned faces → (B, V, 3, crop, crop): the views test-time augmentation averages
        over (`tta_views`; V = 1 and the same pixels as `tensors` without it)."""
        from muldml.prepare import to_rgb

        return torch.stack([self.views(to_rgb(as_pil(face))[0]) for face in faces]) if len(faces) else \
            torch.zeros(0, TTA_VIEWS[self.tta], 3, self.crop, self.crop)

    @torch.no_grad()
    def classify(self, faces: Sequence[ImageLike]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Aligned faces → (probabilities (B, C), predicted class (B,), embedding (B, N·d)), on
        the CPU, in batches of ``batch_size``. Per-slice classifiers: mean softmax, majority vote.
        With test-time augmentation, averaged over the views (`classify_views`)."""
        probs, preds, embeds = [], [], []
        for start in range(0, len(faces), self.batch_size):
            p, pred, embedding = classify_views(self.net, self.view_tensors(faces[start : start + self.batch_size]).to(self.device))
            probs.append(p.cpu())
            preds.append(pred.cpu())
            embeds.append(embedding.cpu())
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
            record.tta = self.tta
            if record.status != "ok":
                continue
            i = next(faces)
            record.expression = self.classes[int(preds[i])]
            record.probabilities = {c: float(p) for c, p in zip(self.classes, probs[i])}
            if embeddings:
                record.embedding = embeds[i].tolist()
        return records


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu", face_size: int = FACE_SIZE,
               batch_size: int = 32, tta: str = "none") -> FERModel:
    """A trained model from a run folder or checkpoint file, ready for `predict` and `embed`;
    tta: test-time augmentation (`TTA_MODES`).

    Loads with ``torch.load(weights_only=True)``: the file runs no code. Raises UserError
    (one line) for a missing file, a file that is not a muldml checkpoint, or one written by a
    newer muldml.
    """
    from muldml.training import load_checkpoint, model_from_checkpoint

    net, cfg = model_from_checkpoint(load_checkpoint(checkpoint))
    return FERModel(net, cfg, device, face_size, batch_size, tta)
