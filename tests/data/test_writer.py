"""ShardWriter: numbered shards in the img2dataset layout, written atomically."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from annofree.data.sources import expand_shards
from annofree.data.writer import ShardWriter
from tests.data.shard_helpers import png_bytes, run, tiny_image


def test_writer_makes_numbered_shards_with_img2dataset_members(tmp_path):
    with ShardWriter(tmp_path / "out", samples_per_shard=2, prefix="cc-") as writer:
        for index in range(5):
            extra = {"index": index} if index == 4 else None
            writer.write(f"{index:09d}", tiny_image(index), f"caption {index}", extra)

    names = [path.name for path in writer.shard_paths]
    assert names == ["cc-000000.tar", "cc-000001.tar", "cc-000002.tar"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # no temporary files left
    assert writer.pattern == str(tmp_path / "out" / "cc-{000000..000002}.tar")
    assert expand_shards(writer.pattern) == [str(path) for path in writer.shard_paths]
    assert writer.num_samples == 5
    with tarfile.open(writer.shard_paths[0]) as tar:
        assert tar.getnames() == ["000000000.jpg", "000000000.txt", "000000001.jpg", "000000001.txt"]
        assert tar.extractfile("000000001.txt").read() == b"caption 1"
        decoded = np.asarray(Image.open(io.BytesIO(tar.extractfile("000000001.jpg").read())).convert("RGB"))
    assert np.abs(decoded.astype(int) - tiny_image(1).astype(int)).max() <= 8  # JPEG, quality 95
    with tarfile.open(writer.shard_paths[2]) as tar:
        assert tar.getnames() == ["000000004.jpg", "000000004.txt", "000000004.json"]
        assert tar.extractfile("000000004.json").read() == b'{"index": 4}'


def test_writer_quality_and_encoded_bytes(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    sizes = {}
    for quality in (30, 95):
        with ShardWriter(tmp_path / f"q{quality}", jpeg_quality=quality) as writer:
            writer.write("a", noise, "noise")
        with tarfile.open(writer.shard_paths[0]) as tar:
            sizes[quality] = tar.getmember("a.jpg").size
    assert sizes[30] < sizes[95]

    with ShardWriter(tmp_path / "bytes") as writer:
        writer.write("p", png_bytes(3), "given as png bytes")
        writer.write("j", b"not an image", "unknown bytes are stored as jpg")
    assert writer.pattern == str(writer.shard_paths[0])  # one shard: a plain path
    with tarfile.open(writer.shard_paths[0]) as tar:
        assert tar.extractfile("p.png").read() == png_bytes(3)
        assert tar.extractfile("j.jpg").read() == b"not an image"


def test_writer_discards_the_incomplete_shard_when_the_block_fails(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, samples_per_shard=2) as writer:
        for index in range(3):
            writer.write(f"{index}", tiny_image(index), "x")
        raise RuntimeError("generator failed")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["000000.tar"]


def test_writers_numbered_from_a_first_shard_leave_no_gap(tmp_path):
    with ShardWriter(tmp_path, samples_per_shard=2, first_shard=5) as writer:
        for index in range(3):
            writer.write(f"{index}", tiny_image(index), "x")
    assert [path.name for path in writer.shard_paths] == ["000005.tar", "000006.tar"]
    assert writer.pattern == str(tmp_path / "{000005..000006}.tar")
    with ShardWriter(tmp_path, first_shard=7) as empty:
        empty.close(keep_empty=True)  # all of its samples were bad: the shard exists, with nothing in it
    with tarfile.open(tmp_path / "000007.tar") as tar:
        assert tar.getnames() == []
    assert len(run(str(tmp_path / "{000005..000007}.tar"), batch_size=1)) == 3
    with ShardWriter(tmp_path / "none"):
        pass
    assert not (tmp_path / "none").exists()  # without keep_empty, no sample means no shard


def test_writer_rejects_bad_keys_and_images(tmp_path):
    with ShardWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="key"):
            writer.write("a.b", tiny_image(0), "dots split keys")
        writer.write("a", tiny_image(0), "x")
        with pytest.raises(ValueError, match="duplicate"):
            writer.write("a", tiny_image(0), "x")
        with pytest.raises(ValueError, match="uint8"):
            writer.write("b", np.zeros((4, 4, 3), dtype=np.float32), "x")
