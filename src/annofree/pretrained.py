"""Named pretrained weights: ``annofree.load("groupvit-gcc-yfcc")`` and ``--weights groupvit-gcc-yfcc``.

:func:`load`, :func:`load_into` and :func:`weights_path` take a registered name or a path (a run directory or a
``.safetensors`` file, read by :mod:`annofree.weights`); every option that names weights goes through them::

    model = annofree.pretrained.load("groupvit-gcc-yfcc")   # or a run directory: the same as annofree.load

On first use a name is resolved in three steps, each skipped when its result is already cached:

1. the published file is downloaded (the official NVlabs release) into ``$ANNOFREE_HOME/downloads/``;
2. its SHA-256 is checked; a file that does not match is never used (a download that fails the check is
   deleted, a file placed there by hand is left for the user to replace);
3. it is converted once into ``$ANNOFREE_HOME/weights/NAME/model.safetensors``, which is what gets loaded.

The official file names end in the first 8 hex digits of the file's SHA-256 (the convention of
``torch.hub`` and mmcv's ``publish_model``); that prefix is what is checked when no full digest is known.
Offline (no network, or ``ANNOFREE_OFFLINE=1``), the error names the URL to fetch and the path to put the
file at; a file placed there is then used with no network access. The pixel statistics each release
was trained with (ImageNet mean and std) travel in the converted model's config and are applied by
``model.normalize_pixels`` wherever annofree feeds images to it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from annofree.errors import UserError
from annofree.weights import load as load_weights_file
from annofree.weights import load_into as load_weights_file_into
from annofree.weights import save_weights, weights_file

_CHUNK = 1 << 20


@dataclass(frozen=True)
class PretrainedWeights:
    """One published checkpoint: where it lives, how to check it, what it is."""

    name: str
    url: str
    sha256: str  # full hex digest, or the prefix the release's file name carries
    source_format: str  # "official": the NVlabs .pth layout
    description: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_RELEASE = "https://github.com/xvjiarui/GroupViT/releases/download/v1.0.0"
REGISTRY: dict[str, PretrainedWeights] = {}


def register(entry: PretrainedWeights) -> None:
    """Make ``entry.name`` loadable by name (tests and downstream packages add their own)."""
    REGISTRY[entry.name] = entry


register(
    PretrainedWeights(
        "groupvit-gcc-yfcc",
        f"{_RELEASE}/group_vit_gcc_yfcc_30e-879422e0.pth",
        "879422e0",
        "official",
        "GroupViT (gcc_yfcc config) trained 30 epochs on CC3M + CC12M + YFCC14M; VOC 52.3 mIoU in the paper",
    )
)
register(
    PretrainedWeights(
        "groupvit-gcc-redcaps",
        f"{_RELEASE}/group_vit_gcc_redcap_30e-3dd09a76.pth",
        "3dd09a76",
        "official",
        "GroupViT (gcc_yfcc config) trained 30 epochs on CC3M + CC12M + RedCaps12M; VOC 50.8 mIoU in the paper",
    )
)


def annofree_home() -> Path:
    """``$ANNOFREE_HOME``, else the user's cache directory (XDG on Linux, Library/Caches on macOS, LOCALAPPDATA)."""
    if os.environ.get("ANNOFREE_HOME"):
        return Path(os.environ["ANNOFREE_HOME"]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "annofree"


def download_path(entry: PretrainedWeights) -> Path:
    return annofree_home() / "downloads" / entry.filename


def converted_path(entry: PretrainedWeights) -> Path:
    return annofree_home() / "weights" / entry.name / "model.safetensors"


def is_pretrained_name(value: str | Path) -> bool:
    """A registered name that is not also a path on disk (a local file or directory of that name wins)."""
    return str(value) in REGISTRY and not Path(value).exists()


def weights_path(path: str | Path) -> Path:
    """A registered name -> its converted weights file (downloaded, checked and converted on first use); a run
    directory or ``.safetensors`` file -> the weights file; a one-line error listing the names otherwise."""
    if is_pretrained_name(path):
        return resolve(str(path))
    file = weights_file(path)
    if not file.is_file():
        names = ", ".join(sorted(REGISTRY))
        raise UserError(f"{file}: no weights file (give a run directory, a .safetensors file or one of: {names})")
    return file


def load(path: str | Path, device: str = "cpu") -> nn.Module:
    """:func:`annofree.weights.load` that also takes a registered name (``annofree.load`` is this function)."""
    return load_weights_file(weights_path(path), device=device)


def load_into(model: nn.Module, path: str | Path, method: str) -> None:
    """:func:`annofree.weights.load_into` that also takes a registered name (``train.init_weights``)."""
    load_weights_file_into(model, weights_path(path), method)


def resolve(name: str, progress: bool = True) -> Path:
    """The converted weights file of a named model, downloading, checking and converting it if needed."""
    entry = REGISTRY.get(name)
    if entry is None:
        raise UserError(f"{name}: no such pretrained model (known: {', '.join(sorted(REGISTRY))})")
    converted = converted_path(entry)
    if converted.is_file():
        return converted
    raw = download_path(entry)
    if not raw.is_file():
        _download(entry, raw, progress)
    elif not _matches(raw, entry.sha256):
        raise UserError(
            f"{raw}: checksum mismatch for {entry.name} (SHA-256 does not start with {entry.sha256}); the file is not "
            f"used: delete it and fetch {entry.url} again"
        )
    return _convert(entry, raw, converted)


def _matches(path: Path, expected: str) -> bool:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(expected.lower())


def _offline_message(entry: PretrainedWeights, reason: str) -> str:
    return (
        f"{entry.name}: not in the cache and cannot be downloaded ({reason}). Fetch {entry.url} and save it as "
        f"{download_path(entry)} (or set ANNOFREE_HOME); annofree checks its checksum and converts it on first use"
    )


def _download(entry: PretrainedWeights, target: Path, progress: bool) -> None:
    """Stream the file to a temporary name beside ``target``, check it, then move it into place."""
    if os.environ.get("ANNOFREE_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise UserError(_offline_message(entry, "ANNOFREE_OFFLINE is set"))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(entry, out, progress)
        if not digest.startswith(entry.sha256.lower()):
            raise UserError(
                f"{entry.url}: checksum mismatch for {entry.name} (got SHA-256 {digest[:16]}..., expected "
                f"{entry.sha256}...); the download was deleted and nothing was cached"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fetch(entry: PretrainedWeights, out, progress: bool) -> str:
    from tqdm import tqdm

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(entry.url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=entry.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UserError(_offline_message(entry, str(getattr(exc, "reason", exc)))) from None
    return digest.hexdigest()


def _convert(entry: PretrainedWeights, raw: Path, converted: Path) -> Path:
    from annofree.interop.official import load_official_checkpoint

    if entry.source_format != "official":
        raise UserError(f"{entry.name}: unknown source format {entry.source_format!r}")
    model = load_official_checkpoint(raw)
    extra = {"annofree.converted_from": entry.url, "annofree.source_sha256": entry.sha256}
    return save_weights(converted, model, "groupvit", model.config.to_dict(), extra=extra)


__all__ = [
    "REGISTRY",
    "PretrainedWeights",
    "annofree_home",
    "converted_path",
    "download_path",
    "is_pretrained_name",
    "load",
    "load_into",
    "register",
    "resolve",
    "weights_path",
]
