"""Unlabelled image batches from a folder or image-only shards: formats, splitting, determinism, resume, bad files."""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from annofree.data.image_folder import fit_image, image_batches, list_images
from annofree.data.shards import Batch
from annofree.errors import UserError
from annofree.methods.base import LoaderSpec

SIZE = 8


def solid(index: int, height: int = 12, width: int = 16) -> np.ndarray:
    """A one-colour image whose red value names it (survives resizing and lossless formats exactly)."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[...] = (index, 100, 200)
    return image


def write_folder(root: Path, count: int, suffix: str = ".png") -> None:
    for index in range(count):
        folder = root / f"part{index % 3}" / "deeper" if index % 2 else root
        folder.mkdir(parents=True, exist_ok=True)
        shape = (12, 16) if index % 2 else (16, 12)  # both orientations: short side resize + centre crop
        Image.fromarray(solid(index, *shape)).save(folder / f"img{index:03d}{suffix}")


def run(data: str, batch_size: int = 3, **spec_args) -> list[Batch]:
    return list(image_batches(LoaderSpec(data=data, batch_size=batch_size, **spec_args), SIZE))


def ids_of(batches: list[Batch]) -> list[int]:
    return [int(image[0, 0, 0]) for batch in batches if batch.data is not None for image in batch.data]


def test_folder_batches_are_fixed_size_uint8_images(tmp_path):
    write_folder(tmp_path, 7)
    batches = run(str(tmp_path), batch_size=2)
    assert [tuple(batch.data.shape) for batch in batches] == [(2, 3, SIZE, SIZE)] * 3  # the 7th image: dropped
    assert all(batch.data.dtype == torch.uint8 and batch.skipped == 0 for batch in batches)
    assert all(bool((batch.data[:, 1] == 100).all() and (batch.data[:, 2] == 200).all()) for batch in batches)
    assert len(set(ids_of(batches))) == 6


def test_every_common_format_is_found_recursively_and_other_files_are_not(tmp_path):
    suffixes = [".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".gif", ".ppm", ".PNG"]
    for index, suffix in enumerate(suffixes):
        folder = tmp_path / "a" / "b" if index % 2 else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(solid(index)).save(folder / f"x{index}{suffix}", format=None if suffix != ".PNG" else "PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / ".cache").mkdir()
    Image.fromarray(solid(99)).save(tmp_path / ".cache" / "y.png")
    assert len(list_images(tmp_path)) == len(suffixes)
    batches = run(str(tmp_path), batch_size=len(suffixes))
    assert len(batches) == 1 and batches[0].skipped == 0
    ids = np.array(sorted(ids_of(batches)))
    assert np.abs(ids - np.arange(len(suffixes))).max() <= 3  # JPEG and WebP are lossy


def test_fit_image_resizes_the_short_side_and_centre_crops():
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, 10:30] = 255  # the centre square of the resized image
    out = fit_image(image, 10)
    assert out.shape == (10, 10, 3)
    assert out.min() > 200
    assert fit_image(solid(5, 3, 4), 8).shape == (8, 8, 3)  # small images grow


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_and_workers_cover_every_image_exactly_once(tmp_path, workers):
    write_folder(tmp_path, 24)
    seen = []
    for rank in range(2):
        batches = run(str(tmp_path), seed=5, epoch=1, rank=rank, world_size=2, num_workers=workers)
        assert len(batches) == 12 // (3 * max(1, workers)) * max(1, workers)
        seen += ids_of(batches)
    assert sorted(seen) == list(range(24))


def test_uneven_counts_leave_out_less_than_one_image_per_reader_and_repeat_none(tmp_path):
    write_folder(tmp_path, 27)
    seen = [i for rank in range(2) for i in ids_of(run(str(tmp_path), batch_size=2, rank=rank, world_size=2))]
    assert len(seen) == len(set(seen)) == 24  # 13 images per rank -> 6 batches of 2


def test_order_depends_on_seed_and_epoch_only(tmp_path):
    write_folder(tmp_path, 12)
    first = ids_of(run(str(tmp_path), seed=1, epoch=0))
    assert first == ids_of(run(str(tmp_path), seed=1, epoch=0))
    assert first != ids_of(run(str(tmp_path), seed=1, epoch=1))
    assert sorted(first) == sorted(ids_of(run(str(tmp_path), seed=2, epoch=0)))


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_batches_gives_exactly_the_rest(tmp_path, workers):
    write_folder(tmp_path, 20)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")  # moves the batch boundaries
    full = ids_of(run(str(tmp_path), batch_size=2, seed=3, num_workers=workers))
    assert len(full) >= 8
    for skip in (1, 3):
        rest = ids_of(run(str(tmp_path), batch_size=2, seed=3, num_workers=workers, skip_batches=skip))
        assert rest == full[2 * skip :]
    assert ids_of(run(str(tmp_path), batch_size=2, seed=3, num_workers=workers, skip_batches=50)) == []


def test_corrupt_and_unreadable_files_are_skipped_counted_and_named(tmp_path, caplog):
    write_folder(tmp_path, 6)
    (tmp_path / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    with caplog.at_level(logging.WARNING):
        batches = run(str(tmp_path), batch_size=2)
    assert sum(batch.skipped for batch in batches) == 3
    assert sum(batch.reasons.get("corrupt_image", 0) for batch in batches) == 3
    assert sorted(ids_of(batches)) == list(range(6))  # every good image, none twice
    for name in ("truncated.png", "text.jpg", "dangling.png"):
        assert name in caplog.text


def write_image_shard(path: Path, indices: list[int], with_captions: bool) -> None:
    with tarfile.open(path, "w") as tar:
        for index in indices:
            buffer = io.BytesIO()
            Image.fromarray(solid(index)).save(buffer, format="PNG")
            members = [(f"{index:05d}.png", buffer.getvalue())]
            if with_captions:
                members.append((f"{index:05d}.txt", b"a caption nobody needs"))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_shards_of_images_need_no_captions(tmp_path):
    write_image_shard(tmp_path / "000000.tar", list(range(6)), with_captions=False)
    write_image_shard(tmp_path / "000001.tar", list(range(6, 12)), with_captions=True)
    for data in (str(tmp_path), str(tmp_path / "{000000..000001}.tar")):
        batches = run(data, batch_size=2)
        assert sorted(ids_of(batches)) == list(range(12))
        assert all(batch.data.shape == (2, 3, SIZE, SIZE) for batch in batches if batch.data is not None)
        assert sum(batch.skipped for batch in batches) == 0


def test_unusable_data_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no image files"):
        run(str(tmp_path))
    with pytest.raises(UserError, match="no such folder"):
        list_images(tmp_path / "missing")
    write_folder(tmp_path, 5)
    with pytest.raises(UserError, match="5 images cannot give each of the 4 readers"):
        run(str(tmp_path), batch_size=2, world_size=2, num_workers=2)
