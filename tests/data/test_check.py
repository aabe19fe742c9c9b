"""``check_shards``: samples, corrupt samples by reason and name, caption lengths, cut captions, noun prompts and
img2dataset's download counts, per shard and in total; damaged shards reported without stopping the check."""

from __future__ import annotations

import io
import tarfile
from collections import Counter

import numpy as np
import pytest

from annofree.data.check import check_shards, length_summary, spread
from annofree.data.shards import ShardWriter
from annofree.errors import UserError
from tests.data.test_img2dataset import img2dataset_folder
from tests.data.test_sources import ShardServer

IMAGE = np.full((16, 16, 3), 120, dtype=np.uint8)


def write_shard(folder, number: int, captions: list[str], bad_image_at: int | None = None) -> str:
    with ShardWriter(folder, samples_per_shard=len(captions), first_shard=number) as writer:
        for index, caption in enumerate(captions):
            image = b"not a jpeg at all" if index == bad_image_at else IMAGE
            writer.write(f"{number}-{index}", image, caption)
    return str(writer.shard_paths[0])


def test_an_img2dataset_folder(tmp_path):
    folder = img2dataset_folder(tmp_path)  # 2 shards of 5 URLs: 1 failed download, 1 empty caption each
    report = check_shards(str(folder))
    total = report.total
    assert [check.shard for check in report.shards] == [str(folder / "00000.tar"), str(folder / "00001.tar")]
    assert total["shards_checked"] == total["shards_listed"] == 2
    assert total["samples"] == 6 and total["corrupt"] == 2 and total["corrupt_by_reason"] == {"bad_caption": 2}
    assert total["corrupt_samples"] == [f"{folder}/00000.tar:000000002: empty caption",
                                        f"{folder}/00001.tar:000010002: empty caption"]  # fmt: skip
    # words per caption: 6, 6, 7 in each shard ("a dog on a red sofa", "a boat on a lake at dawn", ...)
    assert total["words"] == {"min": 6, "median": 6, "p95": 7, "max": 7}
    assert total["tokens"] == total["words"]  # common English words are one CLIP token each
    assert total["cut"] == 0 and total["with_noun_prompt"] == 6 and total["with_noun_prompt_fraction"] == 1.0
    assert total["img2dataset"] == {"tried": 10, "downloaded": 8}
    assert report.shards[1].summary()["img2dataset"] == {"tried": 5, "downloaded": 4}
    assert total["unreadable"] == []

    short = check_shards(f"{folder}/{{00000..00001}}.tar", context_length=8)  # 7 tokens + start + end > 8
    assert short.total["cut"] == 2 and short.to_dict()["context_length"] == 8


def test_noun_prompts_follow_the_training_extraction_and_its_stop_nouns(tmp_path):
    shard = write_shard(tmp_path, 0, ["a cat on a mat", "beautiful and bright!", "my photo", "a photo of a dog"])
    assert check_shards(shard).total["with_noun_prompt"] == 3
    stopped = check_shards(shard, stop_nouns=["Photo"]).total
    assert stopped["with_noun_prompt"] == 2 and stopped["with_noun_prompt_fraction"] == 0.5


def test_corrupt_samples_and_damaged_shards_are_reported_and_the_check_goes_on(tmp_path):
    good = write_shard(tmp_path, 0, ["a red car", "a blue boat", "a green tree"], bad_image_at=1)
    truncated = write_shard(tmp_path, 1, [f"a photo of cat {i}" for i in range(4)])
    with tarfile.open(truncated) as tar:
        cut_at = tar.getmembers()[4].offset_data + 10  # inside the third sample's image
    with open(truncated, "r+b") as file:
        file.truncate(cut_at)
    (tmp_path / "000002.tar").write_bytes(b"this is not a tar file" * 40)
    report = check_shards(str(tmp_path))

    first, second, third = report.shards
    assert first.samples == 2 and first.corrupt == {"corrupt_image": 1} and first.error is None
    assert first.corrupt_samples[0].startswith(f"{good}:0-1: not a readable image")
    assert second.samples == 2 and "damaged shard" in second.error
    assert third.samples == 0 and third.error is not None
    total = report.total
    assert total["samples"] == first.samples + second.samples
    assert [line.split(":")[0] for line in total["unreadable"]] == [truncated, str(tmp_path / "000002.tar")]


def test_an_ungrouped_shard_is_reported(tmp_path):
    path = tmp_path / "000000.tar"
    with tarfile.open(path, "w") as tar:
        for name in ["a.jpg", "b.jpg", "a.txt", "b.txt"]:  # `tar cf` of a folder: a sample's files apart
            data = b"x" if name.endswith(".jpg") else b"a cat"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (check,) = check_shards(str(path)).shards
    assert "not grouped by key" in check.error


def test_max_shards_checks_a_spread_sample_and_workers_change_nothing(tmp_path):
    for number in range(5):
        captions = [f"a photo of dog number {number} and a cat"] * 2
        write_shard(tmp_path, number, captions, bad_image_at=1 if number % 2 else None)
    report = check_shards(str(tmp_path), max_shards=2)
    assert [check.shard.rsplit("/", 1)[1] for check in report.shards] == ["000000.tar", "000004.tar"]
    assert report.total["shards_listed"] == 5 and report.total["shards_checked"] == 2

    serial, parallel = check_shards(str(tmp_path)), check_shards(str(tmp_path), workers=2)
    assert serial.to_dict() == parallel.to_dict()
    assert serial.total["samples"] == 8 and serial.total["corrupt_by_reason"] == {"corrupt_image": 2}


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such shard file"):
        check_shards(str(tmp_path / "missing.tar"))
    with pytest.raises(UserError, match="holds no shard files"):
        check_shards(str(tmp_path))
    write_shard(tmp_path, 0, ["a cat"])
    with pytest.raises(UserError, match="max shards"):
        check_shards(str(tmp_path), max_shards=0)
    with pytest.raises(UserError, match="context length"):
        check_shards(str(tmp_path), context_length=1)


def test_length_summary_and_spread():
    assert length_summary(Counter()) is None
    assert length_summary(Counter({3: 1})) == {"min": 3, "median": 3, "p95": 3, "max": 3}
    lengths = Counter({n: 1 for n in range(1, 101)})  # 1..100
    assert length_summary(lengths) == {"min": 1, "median": 50, "p95": 95, "max": 100}
    items = [str(n) for n in range(10)]
    assert spread(items, None) == items and spread(items, 20) == items
    assert spread(items, 1) == ["0"] and spread(items, 2) == ["0", "9"] and len(set(spread(items, 3))) == 3


def test_shards_over_http_and_through_a_pipe_are_checked_as_training_reads_them(tmp_path):
    for number in range(3):
        write_shard(tmp_path, number, ["a red car", "a blue boat"], bad_image_at=1 if number == 1 else None)
    local = check_shards(str(tmp_path / "{000000..000002}.tar")).total
    assert local["samples"] == 5 and local["corrupt_by_reason"] == {"corrupt_image": 1}
    piped = check_shards(f"pipe:cat {tmp_path}/{{000000..000002}}.tar").total
    assert piped["samples"] == 5 and piped["corrupt_by_reason"] == {"corrupt_image": 1}
    server = ShardServer(tmp_path)
    server.missing.add("000002.tar")
    try:
        report = check_shards(f"{server.url}/{{000000..000002}}.tar")
    finally:
        server.close()
    assert report.total["samples"] == 3 and report.shards[2].error.startswith("HTTP 404")
