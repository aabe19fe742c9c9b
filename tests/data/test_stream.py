"""The batches of an epoch: decoding, bad samples and shards, ranks and workers, determinism, exact resume."""

from __future__ import annotations

import logging
import random
import tarfile

import pytest

from annofree.data.sampling import sample_rng
from annofree.data.spec import LoaderSpec
from annofree.data.stream import _shuffled, image_text_batches
from annofree.data.tar_reading import CorruptShardError, iter_tar_samples
from tests.data.shard_helpers import (
    as_list,
    drop_keys_ending_in_7,
    key_sample,
    keys_of,
    png_bytes,
    run,
    write_directory_order_tar,
    write_raw_tar,
    write_samples,
)


def test_reads_every_sample_decoded_with_its_caption(tmp_path):
    write_samples(tmp_path, 7, per_shard=3)
    batches = run(str(tmp_path), batch_size=1)
    samples = sorted(sample for batch in batches for sample in batch.data)
    assert [(key, pixel, caption) for key, pixel, caption, _ in samples] == [
        (f"{index:06d}", index, f"caption {index}") for index in range(7)
    ]
    assert all(batch.skipped == 0 and batch.reasons == {} for batch in batches)


def test_batches_have_a_fixed_size_and_the_last_partial_one_is_dropped(tmp_path):
    write_samples(tmp_path, 11, per_shard=4)
    batches = run(str(tmp_path), batch_size=3)
    assert [len(batch.data) for batch in batches] == [3, 3, 3]
    assert len(set(keys_of(batches))) == 9


def test_bad_samples_are_skipped_counted_and_named(tmp_path, caplog):
    write_raw_tar(
        tmp_path / "000000.tar",
        [
            ("k0.png", png_bytes(0)),
            ("k0.txt", b"fine"),
            ("k1.jpg", b"\xff\xd8\xff this is not a jpeg"),
            ("k1.txt", b"corrupt image"),
            ("k2.png", png_bytes(2)),
            ("k2.txt", b"  \n\t "),
            ("k3.png", png_bytes(3)),
            ("k4.txt", b"caption without image"),
            ("k4.json", b"{}"),
            ("k5.webp", b"RIFF....WEBP broken"),
            ("k5.png", png_bytes(5)),  # jpg/jpeg/png come before webp
            ("k5.txt", b"  padded caption  "),
            ("k6.png", png_bytes(6)),
            ("k6.txt", b"\xff\xfe not utf-8"),
            ("k7.JPG", png_bytes(7)),  # extensions are matched case-insensitively; bytes decide the format
            ("k7.txt", b"upper-case extension"),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="annofree.data.shards"):
        batches = run(str(tmp_path / "000000.tar"), batch_size=3, shuffle_buffer=1)

    assert len(batches) == 1
    assert sorted((key, pixel, caption) for key, pixel, caption, _ in batches[0].data) == [
        ("k0", 0, "fine"),
        ("k5", 5, "padded caption"),
        ("k7", 7, "upper-case extension"),
    ]
    assert batches[0].skipped == 5
    assert batches[0].reasons == {"corrupt_image": 1, "bad_caption": 2, "missing_caption": 1, "missing_image": 1}
    logged = caplog.text
    for key in ("k1", "k2", "k3", "k4", "k6"):
        assert f"000000.tar:{key}" in logged


def test_warnings_stop_after_the_first_few_but_counting_goes_on(tmp_path, caplog):
    members = []
    for index in range(12):
        members += [(f"b{index:02d}.png", png_bytes(index)), (f"b{index:02d}.txt", b" ")]
    members += [
        (f"g{index}.{ext}", data) for index in range(2) for ext, data in (("png", png_bytes(index)), ("txt", b"ok"))
    ]
    write_raw_tar(tmp_path / "000000.tar", members)
    with caplog.at_level(logging.WARNING, logger="annofree.data.shards"):
        batches = run(str(tmp_path), batch_size=2, shuffle_buffer=1)
    assert batches[0].skipped == 12
    assert sum("skipping sample" in record.message for record in caplog.records) == 5


@pytest.mark.parametrize("workers", [0, 2])
def test_drops_after_the_last_batch_come_in_a_closing_tally(tmp_path, workers):
    members = [(f"g{i}.{ext}", data) for i in range(4) for ext, data in (("png", png_bytes(i)), ("txt", b"ok"))]
    members += [("z1.jpg", b"\xff\xd8\xff not a jpeg"), ("z1.txt", b"late corrupt image")]
    write_raw_tar(tmp_path / "000000.tar", members)
    items = run(str(tmp_path / "000000.tar"), batch_size=2, shuffle_buffer=1, num_workers=workers)
    # One consumer: [g0 g1] [g2 g3] tally. Two workers share the shard by sample index: worker 0 reads
    # g0 g2 z1 and worker 1 g1 g3, so: [g0 g2], [g1 g3], then worker 0's tally ends the epoch.
    assert [b.data is None for b in items] == [False, False, True]
    assert [b.skipped for b in items] == [0, 0, 1] and items[-1].reasons == {"corrupt_image": 1}


def test_a_damaged_shard_is_reported_and_the_readable_part_used(tmp_path, caplog):
    shards = write_samples(tmp_path, 12, per_shard=4).shard_paths
    with tarfile.open(shards[1]) as tar:
        members = tar.getmembers()
        third_image = next(m for m in members if m.name == "000006.png")
        last = members[-1]
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[: third_image.offset_data + 10])  # cut inside sample 6's image
    end_of_members = last.offset_data + -(-last.size // 512) * 512
    shards[2].write_bytes(shards[2].read_bytes()[:end_of_members])  # cut where the end-of-archive block starts

    with pytest.raises(CorruptShardError, match=r"000001\.tar"):
        list(iter_tar_samples(str(shards[1])))
    read = []
    with pytest.raises(CorruptShardError, match="end-of-archive"):
        for key, files in iter_tar_samples(str(shards[2])):
            read.append((key, sorted(files)))
    assert read == [(f"{index:06d}", ["png", "txt"]) for index in range(8, 12)]

    with caplog.at_level(logging.WARNING, logger="annofree.data.shards"):
        batches = run(str(tmp_path), batch_size=1)
    assert sorted(keys_of(batches)) == [f"{index:06d}" for index in (0, 1, 2, 3, 4, 5, *range(8, 12))]
    assert "000001.tar: damaged shard" in caplog.text and "000002.tar: damaged shard" in caplog.text


def test_a_later_ungrouped_shard_is_reported_and_the_others_read(tmp_path, caplog):
    write_samples(tmp_path, 4, per_shard=4)  # 000000.tar, grouped
    write_directory_order_tar(tmp_path / "000001.tar", 3, prefix="")
    with caplog.at_level(logging.WARNING, logger="annofree.data.shards"):
        items = run(str(tmp_path), batch_size=1, shuffle_buffer=1, seed=1)
    keys = [sample[0] for batch in items if batch.data is not None for sample in batch.data]
    assert sorted(keys) == [f"{index:06d}" for index in range(4)]
    # img0 and img1 were passed on before the proof (img0.txt after img2.png), and counted as lacking captions
    assert sum(batch.reasons.get("missing_caption", 0) for batch in items) == 2
    assert "skipping the rest of a shard: " in caplog.text and "000001.tar: samples are not grouped" in caplog.text


# ------------------------------------------------------------------------------ ranks and workers


@pytest.mark.parametrize(
    "shards, per_shard",
    [(1, 24), (4, 6), (6, 4)],
    ids=["by-sample", "by-shard", "whole-shards-then-by-sample"],
)
def test_ranks_and_workers_get_disjoint_parts_that_cover_the_data(tmp_path, shards, per_shard):
    write_samples(tmp_path, shards * per_shard, per_shard=per_shard)
    per_rank = [keys_of(run(str(tmp_path), batch_size=1, rank=rank, world_size=2, num_workers=2)) for rank in (0, 1)]
    assert all(len(keys) == len(set(keys)) == 12 for keys in per_rank)  # 4 consumers, 6 samples each
    assert not set(per_rank[0]) & set(per_rank[1])
    assert set(per_rank[0]) | set(per_rank[1]) == {f"{index:06d}" for index in range(24)}


def test_many_consumers_on_a_tiny_data_set(tmp_path):
    write_samples(tmp_path, 8, per_shard=8)
    per_rank = [keys_of(run(str(tmp_path), batch_size=1, rank=rank, world_size=8)) for rank in range(8)]
    assert sorted(key for keys in per_rank for key in keys) == [f"{index:06d}" for index in range(8)]
    assert all(len(keys) == 1 for keys in per_rank)


def test_epochs_are_deterministic_and_reshuffled(tmp_path):
    write_samples(tmp_path, 24, per_shard=4)
    first = run(str(tmp_path), seed=3, epoch=0)
    assert run(str(tmp_path), seed=3, epoch=0) == first
    assert keys_of(run(str(tmp_path), seed=3, epoch=1)) != keys_of(first)
    assert keys_of(run(str(tmp_path), seed=4, epoch=0)) != keys_of(first)
    assert sorted(keys_of(run(str(tmp_path), seed=3, epoch=1))) == sorted(keys_of(first))


def test_the_sample_rng_depends_on_seed_epoch_and_key_only(tmp_path):
    write_samples(tmp_path, 8, per_shard=2)
    in_process = run(str(tmp_path), seed=5, epoch=2, num_workers=0)
    with_workers = run(str(tmp_path), seed=5, epoch=2, num_workers=2)
    draws = {key: draw for batch in in_process for key, _, _, draw in batch.data}
    assert draws == {key: draw for batch in with_workers for key, _, _, draw in batch.data}
    assert draws == {key: sample_rng(5, 2, key).random() for key in draws}
    assert len(set(draws.values())) == len(draws)


# --------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("workers", [0, 2])
def test_skipping_batches_gives_exactly_the_rest_of_the_epoch(tmp_path, workers):
    write_samples(tmp_path, 30, per_shard=6)
    # Damage that moves batch boundaries: a corrupt image, an empty caption, and samples that sample_fn drops.
    write_raw_tar(
        tmp_path / "000005.tar",
        [("x0.jpg", b"\xff\xd8\xffbroken"), ("x0.txt", b"a"), ("x1.png", png_bytes(1)), ("x1.txt", b"")]
        + [(f"y{index}.{ext}", data) for index in range(4) for ext, data in (("png", png_bytes(index)), ("txt", b"y"))],
    )
    common = dict(batch_size=2, sample_fn=drop_keys_ending_in_7, seed=1, epoch=1, num_workers=workers)
    full = run(str(tmp_path), **common)
    assert len(full) >= 9 and sum(batch.skipped for batch in full) > 0
    for skip in (1, 2, 5, len(full), len(full) + 3):
        assert run(str(tmp_path), skip_batches=skip, **common) == full[skip:], f"skip {skip}"


def test_cheap_skip_matches_on_clean_data(tmp_path):
    write_samples(tmp_path, 20, per_shard=5)
    spec = dict(data=str(tmp_path), batch_size=3, seed=2, num_workers=2)
    full = list(image_text_batches(LoaderSpec(**spec), key_sample, as_list, shuffle_buffer=6))
    cheap = image_text_batches(
        LoaderSpec(**spec, skip_batches=3), key_sample, as_list, shuffle_buffer=6, exact_skip=False
    )
    assert list(cheap) == full[3:]


def test_a_rank_ends_its_epoch_when_the_worker_whose_turn_it_is_runs_out(tmp_path):
    # One shard, so the two workers split it by sample index: worker 0 gets the even samples, and three of
    # its six are corrupt. After three rounds it has no batch left while worker 1 still has three.
    members = []
    for index in range(12):
        image = b"\xff\xd8\xffbroken" if index in (0, 4, 8) else png_bytes(index)
        members += [(f"{index:02d}.png", image), (f"{index:02d}.txt", b"c")]
    write_raw_tar(tmp_path / "000000.tar", members)
    common = dict(batch_size=1, shuffle_buffer=1, num_workers=2)
    full = run(str(tmp_path), **common)
    parities = [int(key) % 2 for key in keys_of(full)]
    assert parities == [0, 1, 0, 1, 0, 1]  # strictly in turn; worker 1's last three batches are not served
    for skip in (3, 6, 7):
        assert run(str(tmp_path), skip_batches=skip, **common) == full[skip:]


def test_the_shuffle_buffer_draws_at_random_from_what_it_holds():
    firsts = set()
    for seed in range(100):
        out = list(_shuffled(range(50), 10, random.Random(seed)))
        assert sorted(out) == list(range(50))
        firsts.add(out[0])
        assert all(item <= position + 10 for position, item in enumerate(out))  # never ahead of the buffer
    assert firsts == set(range(10))
    assert list(_shuffled(range(5), 1, random.Random(0))) == list(range(5))  # size 1: no shuffling
