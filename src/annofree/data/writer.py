"""Writing image-caption samples into numbered webdataset tar shards (the img2dataset layout)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from annofree.data.layout import CAPTION_EXTENSION


class ShardWriter:
    """Write image-caption samples into numbered tar shards, ``samples_per_shard`` per shard.

    Use it as a context manager; each shard appears under its final name only once it is complete
    (written as a hidden temporary file, then renamed), and if the block raises, the incomplete shard
    is discarded. ``shard_paths`` lists the shards written and ``pattern`` is a brace pattern covering them,
    ready for ``LoaderSpec.data`` (:mod:`annofree.data.spec`)::

        with ShardWriter("shards", samples_per_shard=1000) as writer:
            writer.write("000000000", image, "a dog on a sofa")
        spec = LoaderSpec(data=writer.pattern, batch_size=64)

    ``image`` is a ``uint8`` array (``[H, W, 3]`` or ``[H, W]``), encoded as JPEG (``jpeg_quality``) or PNG
    (``image_format="png"``), or bytes already encoded, stored as given under the extension their signature
    shows (png, webp, else jpg). Keys must not contain dots (a tar member's key ends at its first dot).
    Numbering starts at ``first_shard``, so that several writers can make the shards of one data set.
    """

    def __init__(
        self,
        out_dir: str | Path,
        samples_per_shard: int = 1000,
        prefix: str = "",
        jpeg_quality: int = 95,
        image_format: str = "jpg",
        first_shard: int = 0,
    ):
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        if first_shard < 0:
            raise ValueError(f"first_shard must be >= 0, got {first_shard}")
        if image_format not in ("jpg", "png"):
            raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
        if "/" in prefix or os.sep in prefix:
            raise ValueError(f"prefix must be a file-name prefix, not a path: {prefix!r}")
        self.out_dir = Path(out_dir)
        self.samples_per_shard = samples_per_shard
        self.prefix = prefix
        self.jpeg_quality = jpeg_quality
        self.image_format = image_format
        self.first_shard = first_shard
        self.shard_paths: list[Path] = []
        self.num_samples = 0
        self._tar: tarfile.TarFile | None = None
        self._tmp_path: Path | None = None
        self._keys_in_shard: set[str] = set()
        self._closed = False

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._discard_current()
            self._closed = True

    @property
    def pattern(self) -> str:
        """A brace pattern naming exactly the shards written (a plain path when there is one)."""
        if not self.shard_paths:
            raise ValueError(f"no shards written to {self.out_dir}")
        if len(self.shard_paths) == 1:
            return str(self.shard_paths[0])
        first, last = self._index(self.first_shard), self._index(self.first_shard + len(self.shard_paths) - 1)
        return str(self.out_dir / f"{self.prefix}{{{first}..{last}}}.tar")

    def write(self, key: str, image: np.ndarray | bytes, caption: str, extra: dict | None = None) -> None:
        """Add one sample: ``KEY.<jpg|png|webp>``, ``KEY.txt`` and, with ``extra``, ``KEY.json``."""
        if self._closed:
            raise ValueError("ShardWriter is closed")
        if not key or "." in key or key.startswith("/") or key.endswith("/"):
            raise ValueError(f"invalid sample key {key!r} (non-empty, no dots, no leading/trailing slash)")
        if self._tar is None:
            self._open_next()
        if key in self._keys_in_shard:
            raise ValueError(f"duplicate sample key {key!r} in shard {self._final_path(len(self.shard_paths))}")
        image_bytes, extension = self._encode(image)
        self._add(f"{key}.{extension}", image_bytes)
        self._add(f"{key}.{CAPTION_EXTENSION}", caption.encode("utf-8"))
        if extra is not None:
            self._add(f"{key}.json", json.dumps(extra, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        self._keys_in_shard.add(key)
        self.num_samples += 1
        if len(self._keys_in_shard) >= self.samples_per_shard:
            self._finish_current()

    def close(self, keep_empty: bool = False) -> None:
        """Finish the last shard. Called by the context manager. With ``keep_empty``, a writer that was given
        no sample still writes one empty shard (shards numbered by several writers then leave no gap)."""
        if not self._closed:
            if keep_empty and self._tar is None and not self.shard_paths:
                self._open_next()
            self._finish_current()
            self._closed = True

    def _index(self, number: int) -> str:
        return f"{number:06d}"

    def _final_path(self, written: int) -> Path:
        """The path of the shard after ``written`` finished ones."""
        return self.out_dir / f"{self.prefix}{self._index(self.first_shard + written)}.tar"

    def _open_next(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        final = self._final_path(len(self.shard_paths))
        self._tmp_path = final.with_name(f".{final.name}.tmp")
        self._tar = tarfile.open(self._tmp_path, "w")  # noqa: SIM115 (open across write calls)
        self._keys_in_shard = set()

    def _finish_current(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        final = self._final_path(len(self.shard_paths))
        os.replace(self._tmp_path, final)
        self.shard_paths.append(final)
        self._tar, self._tmp_path = None, None

    def _discard_current(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tmp_path.unlink(missing_ok=True)
            self._tar, self._tmp_path = None, None

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0  # shards with the same content are byte-identical
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(data))

    def _encode(self, image: np.ndarray | bytes) -> tuple[bytes, str]:
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            return data, _extension_from_signature(data)
        array = np.asarray(image)
        if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3))):
            raise ValueError(f"image must be uint8 [H, W, 3] or [H, W], got {array.dtype} {list(array.shape)}")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        buffer = io.BytesIO()
        pil = Image.fromarray(np.ascontiguousarray(array))
        if self.image_format == "png":
            pil.save(buffer, format="PNG")
        else:
            pil.save(buffer, format="JPEG", quality=self.jpeg_quality)
        return buffer.getvalue(), self.image_format


def _extension_from_signature(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "jpg"
