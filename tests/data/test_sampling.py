"""Which shards each consumer reads: resampling with replacement, mixtures of sources by weight, epochs of
``samples_per_epoch`` samples, and the exact resume that all of it keeps."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from annofree.data.sampling import ShardSampling, split_shards
from annofree.data.spec import LoaderSpec
from annofree.data.stream import image_text_batches
from annofree.data.writer import ShardWriter
from annofree.engine.trainer import train
from annofree.errors import UserError
from annofree.methods.groupvit import GroupViTMethod
from annofree.sections import ConfigError
from tests.data.shard_helpers import as_list, key_sample, keys_of, run, tiny_image, write_samples
from tests.methods.test_groupvit import TINY_MODEL


def write_source(out_dir: Path, first_key: int, shards: int, per_shard: int) -> str:
    """``shards`` full shards whose keys start at ``first_key`` (so each source's samples can be told apart)."""
    with ShardWriter(out_dir, samples_per_shard=per_shard, image_format="png") as writer:
        for index in range(shards * per_shard):
            writer.write(f"{first_key + index:06d}", tiny_image(index), f"caption {index}")
    return writer.pattern


def resampled(data: str, weights=None, samples_per_epoch: int = 48, shuffle_buffer: int = 8, **spec_args) -> list:
    spec = LoaderSpec(data=data, **{"batch_size": 4, **spec_args})
    sampling = ShardSampling(resampled=True, source_weights=weights, samples_per_epoch=samples_per_epoch)
    return list(image_text_batches(spec, key_sample, as_list, shuffle_buffer=shuffle_buffer, sampling=sampling))


@pytest.fixture
def two_sources(tmp_path) -> str:
    a = write_source(tmp_path / "a", 0, shards=10, per_shard=10)  # keys 000000..000099
    b = write_source(tmp_path / "b", 100000, shards=20, per_shard=10)  # keys 100000..100199
    return f"{a}::{b}"


def share_of_b(batches: list) -> float:
    keys = keys_of(batches)
    return sum(key >= "100000" for key in keys) / len(keys)


def test_weighted_sources_give_their_shares_of_the_samples(two_sources):
    batches = resampled(two_sources, weights=(1, 3), samples_per_epoch=4000, batch_size=50, shuffle_buffer=100)
    assert len(keys_of(batches)) == 4000
    assert abs(share_of_b(batches) - 0.75) < 0.02
    # by default each source weighs its share of the shards: 20 of 30
    default = resampled(two_sources, samples_per_epoch=3000, batch_size=50, shuffle_buffer=100)
    assert abs(share_of_b(default) - 2 / 3) < 0.02


def test_resampling_draws_shards_with_replacement_and_anew_each_epoch(two_sources):
    first = keys_of(resampled(two_sources, samples_per_epoch=400, batch_size=8, seed=1))
    assert len(first) == 400 and max(Counter(first).values()) > 1  # 300 distinct samples: some come twice
    assert keys_of(resampled(two_sources, samples_per_epoch=400, batch_size=8, seed=1)) == first
    assert keys_of(resampled(two_sources, samples_per_epoch=400, batch_size=8, seed=1, epoch=1)) != first
    assert keys_of(resampled(two_sources, samples_per_epoch=400, batch_size=8, seed=2)) != first


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resampled_epoch_resumes_exactly(two_sources, workers):
    common = dict(weights=(1, 3), samples_per_epoch=60, seed=3, epoch=2, num_workers=workers)
    full = resampled(two_sources, **common)
    assert len(full) == 15  # 60 samples in batches of 4
    for skip in (1, 4, 7, 14, 15, 20):
        assert resampled(two_sources, skip_batches=skip, **common) == full[skip:], f"skip {skip}"


def test_every_rank_gets_its_share_of_a_resampled_epoch(two_sources):
    per_rank = [resampled(two_sources, samples_per_epoch=50, rank=rank, world_size=2, num_workers=2) for rank in (0, 1)]
    assert [len(batches) for batches in per_rank] == [6, 6]  # 50 // (4 x 2)
    assert keys_of(per_rank[0]) != keys_of(per_rank[1])


def test_a_source_that_gives_nothing_is_left_out_and_the_rest_goes_on(tmp_path, caplog):
    good = write_source(tmp_path / "good", 0, shards=2, per_shard=5)
    (tmp_path / "bad").mkdir()
    for index in range(3):
        (tmp_path / "bad" / f"{index}.tar").write_bytes(b"not a tar" * 100)
    with caplog.at_level(logging.WARNING):
        batches = resampled(f"{tmp_path / 'bad'}::{good}", weights=(5, 1), samples_per_epoch=40)
    assert len(keys_of(batches)) == 40 and all(key < "000010" for key in keys_of(batches))
    assert "source 1 of 2" in caplog.text and "left out of the mixture" in caplog.text
    nothing = resampled(str(tmp_path / "bad"), samples_per_epoch=40)  # nothing readable: no batch, no endless loop
    assert all(batch.data is None for batch in nothing)


def test_sampling_settings_that_do_not_fit_are_one_line_errors(two_sources):
    cases = [
        (ShardSampling(resampled=True), "need samples_per_epoch"),
        (ShardSampling(samples_per_epoch=10), "resampled shards only"),
        (ShardSampling(source_weights=(1, 3)), "need resampled"),
        (ShardSampling(True, (1, 2, 3), 10), r"3 weights for 2 source\(s\)"),
        (ShardSampling(True, (1, 0), 10), "must all be > 0"),
        (ShardSampling(True, None, 3), "less than one batch on each rank"),
    ]
    for sampling, message in cases:
        with pytest.raises(UserError, match=message) as caught:
            list(image_text_batches(LoaderSpec(data=two_sources, batch_size=4), key_sample, as_list, sampling=sampling))
        assert "\n" not in str(caught.value)


def test_groupvit_data_section_checks_the_sampling_keys():
    def check(data: dict, train_data: str | None = "a/{0..1}.tar::b/x.tar") -> None:
        GroupViTMethod.check_config({"data": data, "train": {"data": train_data}})

    check({"resampled": True, "samples_per_epoch": 1000, "source_weights": [1, 3]})
    for data, key in [
        ({"resampled": True}, "data.samples_per_epoch"),
        ({"samples_per_epoch": 1000}, "data.samples_per_epoch"),
        ({"source_weights": [1, 3]}, "data.source_weights"),
        ({"resampled": True, "samples_per_epoch": 1000, "source_weights": [1, 3, 1]}, "data.source_weights"),
        ({"resampled": True, "samples_per_epoch": 1000, "source_weights": [1, -1]}, "data.source_weights"),
        ({"resampled": True, "samples_per_epoch": 0}, "data.samples_per_epoch"),
    ]:
        with pytest.raises(ConfigError, match=rf"config key {key}\b") as caught:
            check(data)
        assert "\n" not in str(caught.value)


def test_the_epoch_split_is_unchanged_by_sources(tmp_path):
    shards = [f"s{index}" for index in range(7)]
    own = [split_shards(shards, 0, 0, consumer, 3) for consumer in range(3)]
    assert sorted(shard for part, _ in own for shard in part) == sorted(set(shards) - set(own[0][1]))
    assert len(own[0][1]) == 1  # 7 = 2 x 3 whole shards + 1 shared


def test_weights_that_do_not_fit_the_data_given_to_train_are_refused_before_any_work(two_sources, tmp_path):
    config = {"method": "groupvit", "model": TINY_MODEL, "train": {"steps": 1, "device": "cpu"},
              "data": {"resampled": True, "samples_per_epoch": 100, "source_weights": [1, 3, 5]}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"data.source_weights: must be one weight per '::'-separated source .*\(2\)"):
        train(config, tmp_path / "run", data=two_sources)
    assert not (tmp_path / "run").exists()


def test_the_shard_order_is_shuffled_per_epoch(tmp_path):
    write_samples(tmp_path, 12, per_shard=2)
    orders = []
    for epoch in (0, 1):
        keys = keys_of(run(str(tmp_path), batch_size=1, shuffle_buffer=1, seed=0, epoch=epoch))
        shards = [int(key) // 2 for key in keys]
        assert shards[::2] == shards[1::2]  # without a shuffle buffer, each shard is read in one go
        orders.append(shards[::2])
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(6))
    assert orders[0] != orders[1]


def test_a_partial_last_shard_is_shared_so_parts_stay_balanced(tmp_path):
    write_samples(tmp_path, 26, per_shard=6)  # shards of 6, 6, 6, 6 and 2 samples
    for epoch in range(4):
        counts = [len(keys_of(run(str(tmp_path), batch_size=1, epoch=epoch, rank=r, world_size=4))) for r in range(4)]
        assert sorted(counts) == [6, 6, 7, 7], f"epoch {epoch}: {counts}"
