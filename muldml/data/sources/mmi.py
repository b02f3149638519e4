"""MMI: extracted frames of labelled sequences, three around the apex."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from muldml.data.sources.common import (canonical_label, csv_rows, dataset_root, file_item, finish, images_in,
                                        other_files, parse_code)
from muldml.data.sources.items import SourceDataset


_MMI_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")  # also codes 1-6, in this order


def load_mmi(root: str | Path) -> SourceDataset:
    """MMI as extracted frames.

    Layout: ``<subject>/<sequence>/<frame>.png|jpg`` and ``labels.csv`` with columns
    ``subject,sequence,emotion`` and optionally ``peak``. Emotion: a name (anger,
    disgust, fear, happiness/happy, sadness/sad, surprise) or a code 1-6 in that order.
    Each labelled sequence gives three frames (in natural name order): with ``peak``
    (an index into the sorted frames), the peak frame and its two neighbours; without
    it, the three middle frames, since MMI sequences run neutral → apex → neutral and
    the apex sits in the middle. Subject: the subject folder. Classes: the six above.
    A bad emotion or peak skips the sequence's frames, with a warning; a row whose
    sequence has no frames is only warned about.
    """
    root = dataset_root(root)
    table = root / "labels.csv"
    items, warnings = [], []
    for number, row in enumerate(csv_rows(table, ("subject", "sequence", "emotion")), 1):
        subject, sequence = (row.get("subject") or "").strip(), (row.get("sequence") or "").strip()
        where = f"labels.csv row {number}"
        if not subject or not sequence:
            warnings.append(f"{where}: no subject or sequence")
            continue
        frames = images_in(root / subject / sequence)
        items += other_files(root, root / subject / sequence)
        if not frames:
            warnings.append(f"{where}: no frames in {subject}/{sequence}")
            continue
        label, reason = _mmi_label(row.get("emotion"))
        chosen, peak_reason = _apex_frames(frames, row.get("peak"))
        reason = reason or peak_reason
        if reason:
            warnings.append(f"{where} ({subject}/{sequence}): {reason}")
        items += [file_item(root, f, label, reason, subject=subject) for f in chosen]
    return finish("mmi", list(_MMI_CLASSES), items, warnings, root)


def _mmi_label(text: str | None) -> tuple[str | None, str | None]:
    label = canonical_label(text or "")
    if label is None:
        code, reason = parse_code(text, range(1, len(_MMI_CLASSES) + 1), "emotion")
        return (None, reason) if reason else (_MMI_CLASSES[code - 1], None)
    if label not in _MMI_CLASSES:
        return None, f"{label} is not one of MMI's six classes"
    return label, None


def _apex_frames(frames: Sequence[Path], peak: str | None) -> tuple[list[Path], str | None]:
    """The three frames around the apex: ``peak`` and its neighbours, else the middle three."""
    centre, reason = (len(frames) - 1) // 2, None
    if (peak or "").strip():
        index, reason = parse_code(peak, range(len(frames)), "peak frame")
        centre = centre if reason else index
    start = max(0, min(centre - 1, len(frames) - 3))  # keep the window inside the sequence
    return list(frames[start : start + 3]), reason
