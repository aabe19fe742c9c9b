"""Writing and reading image-caption shards: layout, splitting, determinism, exact resume, bad data."""

from __future__ import annotations

import io
import logging
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annofree.data.shards import (
    Batch,
    CorruptShardError,
    ShardWriter,
    UngroupedShardError,
    _shuffled,
    check_grouped,
    expand_shards,
    image_text_batches,
    iter_tar_samples,
    sample_rng,
)
from annofree.errors import UserError
from annofree.methods.base import LoaderSpec


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


# ----------------------------------------------------------------------------------------------- writer


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


# ---------------------------------------------------------------------------------------- finding shards


def test_expand_shards_accepts_patterns_files_directories_and_lists(tmp_path):
    first = write_samples(tmp_path / "a", 6, per_shard=2).shard_paths
    second = write_samples(tmp_path / "b", 2, per_shard=2).shard_paths
    a = [str(path) for path in first]
    assert expand_shards(str(tmp_path / "a" / "{000000..000002}.tar")) == a
    assert expand_shards(a[1]) == [a[1]]
    assert expand_shards(str(tmp_path / "a")) == a
    both = f"{tmp_path}/a/{{000000,000002}}.tar, {tmp_path / 'b'},{a[0]}"
    assert expand_shards(both) == [a[0], a[2], str(second[0])]  # a[0] only once

    missing = str(tmp_path / "a" / "{000000..000009}.tar")
    with pytest.raises(UserError, match=r"\{000000\.\.000009\}\.tar: 7 of 10"):
        expand_shards(missing)
    with pytest.raises(UserError, match=r"nowhere\.tar"):
        expand_shards(str(tmp_path / "nowhere.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no shard files"):
        expand_shards(str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"missing\.tar"):
        image_text_batches(LoaderSpec(data=str(tmp_path / "missing.tar"), batch_size=1), key_sample, as_list)


# --------------------------------------------------------------------------------------------- reading


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


# ----------------------------------------------------------------------------- data made by hand


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


@pytest.mark.parametrize("name", ["captions.csv", "captions.tsv", "part-0.PARQUET"])
def test_a_table_given_as_shards_points_to_annofree_data_shards(tmp_path, name):
    (tmp_path / name).write_text("url\tcaption\nimg0.png\ta caption\n")
    with pytest.raises(UserError, match=rf"{name}: a table, not webdataset shards.*annofree data shards .*{name} OUT"):
        run(str(tmp_path / name))
    for part in ("a", "b"):
        (tmp_path / f"{part}.csv").write_text("url,caption\n")
    with pytest.raises(UserError, match=r"a\.csv: a table"):  # in a brace pattern too
        expand_shards(str(tmp_path / "{a,b}.csv"))


def test_a_folder_of_captioned_images_given_as_shards_points_to_annofree_data_shards(tmp_path):
    write_folder(tmp_path / "folder", 2)
    with pytest.raises(UserError, match=r"holds no shard files .*annofree data shards SRC OUT"):
        run(str(tmp_path / "folder"))


# ------------------------------------------------------------------------------ splitting and ordering


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


# ---------------------------------------------------------------------------------------------- resume


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


def test_the_shuffle_buffer_draws_at_random_from_what_it_holds():
    firsts = set()
    for seed in range(100):
        out = list(_shuffled(range(50), 10, random.Random(seed)))
        assert sorted(out) == list(range(50))
        firsts.add(out[0])
        assert all(item <= position + 10 for position, item in enumerate(out))  # never ahead of the buffer
    assert firsts == set(range(10))
    assert list(_shuffled(range(5), 1, random.Random(0))) == list(range(5))  # size 1: no shuffling


def test_a_partial_last_shard_is_shared_so_parts_stay_balanced(tmp_path):
    write_samples(tmp_path, 26, per_shard=6)  # shards of 6, 6, 6, 6 and 2 samples
    for epoch in range(4):
        counts = [len(keys_of(run(str(tmp_path), batch_size=1, epoch=epoch, rank=r, world_size=4))) for r in range(4)]
        assert sorted(counts) == [6, 6, 7, 7], f"epoch {epoch}: {counts}"
