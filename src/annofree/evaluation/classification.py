"""Zero-shot image classification (ImageNet-style), as GroupViT and CLIP evaluate it.

Data, either layout:

- a class folder: ``ROOT/CLASS/*.jpg`` (class ids in sorted folder order);
- a validation list: ``--val-list FILE`` with lines ``relative/path.JPEG CLASS_ID`` (the Caffe/ImageNet
  ``val.txt``), paths relative to ROOT.

Class names for the prompts come from a file (one name a line, line i names class id i; e.g. CLIP's
ImageNet names) or, without one, from the folder names (``_`` read as a space). Every class gets the
normalised mean of its prompts' un-normalised embeddings over a template ensemble (``class_embeddings``):
GroupViT's 7-template subset (the official protocol, ``annofree.evaluation.protocols``) or CLIP's 80.
Images get GroupViT's validation view: the short side resized (bilinear) to int(256/224 x the model's input
size), the long side in proportion (truncated), then the central crop of the input size. Unreadable images
are skipped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from annofree.data.images import load_image
from annofree.errors import UserError

logger = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class ClassificationSet:
    """Image paths with class ids, and the class names to prompt with."""

    paths: list[Path]
    labels: list[int]
    class_names: list[str]


def _read_names(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path}: no such class-names file (one name a line, line i names class id i)")
    names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or not all(names):
        raise UserError(f"{path}: needs one non-empty class name a line")
    return names


def _from_folders(root: Path) -> tuple[list[Path], list[int], list[str]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise UserError(f"{root}: no class folders (ROOT/CLASS/*.jpg), and no --val-list given")
    paths, labels = [], []
    for index, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [index] * len(files)
    return paths, labels, [folder.name.replace("_", " ") for folder in folders]


def _from_list(root: Path, val_list: Path) -> tuple[list[Path], list[int]]:
    if not val_list.is_file():
        raise UserError(f"{val_list}: no such validation list (lines 'relative/path.JPEG CLASS_ID')")
    paths, labels = [], []
    for number, line in enumerate(val_list.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise UserError(f"{val_list}: line {number} is not 'relative/path CLASS_ID': {line.strip()!r}")
        paths.append(root / parts[0])
        labels.append(int(parts[1]))
    return paths, labels


def open_classification_set(
    root: str | Path, class_names: str | Path | None = None, val_list: str | Path | None = None
) -> ClassificationSet:
    """Read either layout (module docstring); ``UserError`` naming the file for anything malformed."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such directory")
    if val_list is not None:
        paths, labels = _from_list(root, Path(val_list))
        if class_names is None:
            raise UserError(f"{val_list}: a validation list needs --class-names (one name a line, line i = id i)")
        names = _read_names(Path(class_names))
    else:
        paths, labels, names = _from_folders(root)
        if class_names is not None:
            listed = _read_names(Path(class_names))
            if len(listed) != len(names):
                raise UserError(f"{class_names}: {len(listed)} names for {len(names)} class folders in {root}")
            names = listed
    if not paths:
        raise UserError(f"{root}: no images")
    bad = sorted({label for label in labels if not 0 <= label < len(names)})
    if bad:
        raise UserError(f"class ids {bad[:5]} have no name ({len(names)} names given)")
    return ClassificationSet(paths, labels, names)


def center_view(image: np.ndarray, size: int) -> np.ndarray:
    """The official validation view: torchvision's ``Resize(int(256 / 224 * size))`` (bilinear, the long side
    truncated) then ``CenterCrop(size)`` (offsets rounded half to even)."""
    from annofree.evaluation.protocols import CLASSIFICATION_PROTOCOL

    height, width = image.shape[:2]
    short = int(CLASSIFICATION_PROTOCOL.resize_ratio * size)
    if height <= width:
        new_height, new_width = short, int(short * width / height)
    else:
        new_height, new_width = int(short * height / width), short
    if (new_height, new_width) != (height, width):
        image = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.BILINEAR))
    top, left = round((new_height - size) / 2), round((new_width - size) / 2)  # Python rounds half to even
    return image[max(top, 0) : max(top, 0) + size, max(left, 0) : max(left, 0) + size]


def _batches(data: ClassificationSet, size: int, batch_size: int, skipped: list[str]):
    """Yield ``(pixels [B, 3, S, S] in [0, 1], labels [B])``; unreadable files are logged and skipped."""
    images, labels = [], []
    for path, label in zip(data.paths, data.labels, strict=True):
        try:
            images.append(center_view(load_image(path), size))
            labels.append(label)
        except UserError as exc:
            logger.warning("skipping %s", exc)
            skipped.append(str(path))
        if len(images) == batch_size:
            yield _to_tensor(images), torch.tensor(labels)
            images, labels = [], []
    if images:
        yield _to_tensor(images), torch.tensor(labels)


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def classify_zero_shot(
    model: Any,
    data: ClassificationSet,
    templates: Sequence[str],
    *,
    batch_size: int = 64,
    image_size: int | None = None,
    progress: bool = True,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Top-1 and top-5 accuracy of ``model`` (a GroupViT) on ``data`` with the template ensemble."""
    from annofree.inference.pixels import eval_mode, input_device_dtype
    from annofree.inference.zero_shot import class_embeddings

    size = int(image_size or model.config.image.img_size)
    text = class_embeddings(model, data.class_names, list(templates), tokenizer)
    device, dtype = input_device_dtype(model)
    k = min(5, len(data.class_names))
    correct = torch.zeros(2, dtype=torch.long)
    skipped: list[str] = []
    with tqdm(total=len(data.paths), desc="classify", unit="img", disable=not progress) as bar, eval_mode(model):
        for pixels, labels in _batches(data, size, batch_size, skipped):
            images = model.encode_image(model.normalize_pixels(pixels.to(device)).to(dtype)).float()
            top = (F.normalize(images, dim=-1) @ text.to(images.device).T).topk(k, dim=-1).indices.cpu()
            hits = top == labels[:, None]
            correct += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum()])
            bar.update(len(labels))
    counted = len(data.paths) - len(skipped)
    if counted == 0:
        raise UserError("no readable images to classify")
    return {
        "top1": float(correct[0]) / counted,
        "top5": float(correct[1]) / counted,
        "num_images": counted,
        "num_classes": len(data.class_names),
        "templates": len(templates),
        "skipped": skipped,
    }


__all__ = ["ClassificationSet", "center_view", "classify_zero_shot", "open_classification_set"]
