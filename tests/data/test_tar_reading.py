"""One shard read as a stream: samples grouped by key, shards made by hand, damage found without seeking."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tarfile

import pytest

from annofree.data.tar_reading import UngroupedShardError, check_grouped, iter_tar_samples
from annofree.errors import UserError
from tests.data.shard_helpers import run, write_directory_order_tar, write_folder, write_samples


def test_a_tar_not_grouped_by_key_is_refused_with_how_to_make_shards(tmp_path):
    write_directory_order_tar(tmp_path / "x.tar", 4)
    with pytest.raises(UngroupedShardError) as caught:
        run(str(tmp_path / "x.tar"), batch_size=1)
    message = str(caught.value)
    assert "x.tar: samples are not grouped by key" in message and "'./img0'" in message
    assert "annofree data shards" in message and "tar --sort=name -cf x.tar -C FOLDER ." in message
    assert "\n" not in message
    with pytest.raises(UngroupedShardError):  # the reader itself stops at the first member out of place
        list(iter_tar_samples(str(tmp_path / "x.tar")))
    with pytest.raises(UngroupedShardError):
        check_grouped(str(tmp_path / "x.tar"))


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs the tar command")
def test_the_tar_command_the_message_gives_makes_a_readable_shard(tmp_path):
    write_folder(tmp_path / "folder", 5)
    made = subprocess.run(["tar", "--sort=name", "-cf", str(tmp_path / "x.tar"), "-C", str(tmp_path / "folder"), "."])
    if made.returncode != 0:
        pytest.skip("this tar has no --sort=name (not GNU tar)")
    with tarfile.open(tmp_path / "x.tar") as tar:
        assert "./img0.png" in tar.getnames()  # "./" prefixes, as users' tars have them
    batches = run(str(tmp_path / "x.tar"), batch_size=1)
    assert sorted((key, pixel, caption) for key, pixel, caption, _ in (s for b in batches for s in b.data)) == [
        (f"./img{index}", index, f"caption {index}") for index in range(5)
    ]


def test_a_truncated_compressed_shard_is_reported(tmp_path):
    write_samples(tmp_path, 4, per_shard=4)
    packed = gzip.compress((tmp_path / "000000.tar").read_bytes())
    (tmp_path / "whole.tar.gz").write_bytes(packed)
    assert [key for key, _ in iter_tar_samples(str(tmp_path / "whole.tar.gz"))] == [f"{i:06d}" for i in range(4)]
    (tmp_path / "cut.tar.gz").write_bytes(packed[: len(packed) * 3 // 4])
    with pytest.raises(UserError, match="damaged shard"):
        list(iter_tar_samples(str(tmp_path / "cut.tar.gz")))
