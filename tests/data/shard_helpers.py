"""Shared helpers of the shard tests: tiny images, shards written with ShardWriter or by hand, one epoch read."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from annofree.data.spec import LoaderSpec
from annofree.data.stream import Batch, image_text_batches
from annofree.data.writer import ShardWriter


def tiny_image(index: int) -> np.ndarray:
    """A 16x16 image whose pixels tell which sample it is."""
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[..., 0] = index % 256
    image[..., 1] = np.arange(16, dtype=np.uint8)[:, None] * 8
    image[..., 2] = 200
    return image


def write_samples(out_dir: Path, count: int, per_shard: int) -> ShardWriter:
    with ShardWriter(out_dir, samples_per_shard=per_shard, image_format="png") as writer:
        for index in range(count):
            writer.write(f"{index:06d}", tiny_image(index), f"caption {index}")
    return writer


def key_sample(key: str, image: np.ndarray, caption: str, rng) -> tuple[str, int, str, float]:
    """What the tests look at: the key, the pixel that names the image, the caption, one rng draw."""
    return key, int(image[0, 0, 0]), caption, rng.random()


def drop_keys_ending_in_7(key: str, image: np.ndarray, caption: str, rng):
    return None if key.endswith("7") else key_sample(key, image, caption, rng)


def as_list(samples: list) -> list:
    return list(samples)


def run(data: str, batch_size: int = 2, sample_fn=key_sample, shuffle_buffer: int = 8, **spec_args) -> list[Batch]:
    spec = LoaderSpec(data=data, batch_size=batch_size, **spec_args)
    return list(image_text_batches(spec, sample_fn, as_list, shuffle_buffer=shuffle_buffer))


def keys_of(batches: list[Batch]) -> list[str]:
    return [sample[0] for batch in batches for sample in batch.data]


def write_raw_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A shard with exactly these members (to build samples that ShardWriter would never write)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def png_bytes(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(tiny_image(index)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_folder(folder: Path, count: int) -> None:
    """What a user has before making shards: NAME.png + NAME.txt files side by side."""
    folder.mkdir(parents=True)
    for index in range(count):
        (folder / f"img{index}.png").write_bytes(png_bytes(index))
        (folder / f"img{index}.txt").write_text(f"caption {index}")


def write_directory_order_tar(path: Path, count: int, prefix: str = "./") -> None:
    """What ``tar cf x.tar -C folder .`` can give: a "./" entry, then members in directory order, here all
    images before all captions (the order depends on the file system; any order that parts a sample does)."""
    with tarfile.open(path, "w") as tar:
        folder = tarfile.TarInfo(prefix or ".")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for extension in ("png", "txt"):
            for index in range(count):
                data = png_bytes(index) if extension == "png" else f"caption {index}".encode()
                info = tarfile.TarInfo(f"{prefix}img{index}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
