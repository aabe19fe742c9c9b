"""Shards from caption data as users have it: folders with .txt captions and CSV/TSV/parquet tables, read back
by the training reader; bad samples skipped and named; parallel, deterministic, atomic and resumable."""

from __future__ import annotations

import builtins
import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annofree.data import make_shards as make_shards_module
from annofree.data.make_shards import MANIFEST_NAME, make_shards, read_source
from annofree.data.shards import expand_shards, image_text_batches
from annofree.errors import UserError
from annofree.methods.base import LoaderSpec


def image(index: int) -> np.ndarray:
    """An image whose top-left pixel tells which one it is (exact in PNG, within a few levels in JPEG)."""
    array = np.full((12, 20, 3), 100, dtype=np.uint8)
    array[..., 0] = index * 10
    return array


def save(path: Path, index: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image(index)).save(path)
    return path


def captioned_folder(root: Path, count: int) -> list[str]:
    """``count`` images in a nested folder, PNG, JPEG and BMP, each with its .txt caption; returns the
    relative paths in sorted order (the order shards keep)."""
    names = []
    for index in range(count):
        relative = f"{'deep/er' if index % 2 == 0 else 'top'}/img{index:02d}.{('png', 'jpg', 'bmp')[index % 3]}"
        save(root / relative, index)
        (root / relative).with_suffix(".txt").write_text(f"  photo number {index}\n")
        names.append(relative)
    return sorted(names)


def key_caption_pixel(key, decoded, caption, rng):
    return key, caption, int(decoded[0, 0, 0])


def read_back(data: str) -> dict[str, tuple[str, int]]:
    """Every sample the training reader gets from ``data``: key -> (caption, top-left red value)."""
    spec = LoaderSpec(data=data, batch_size=1)
    batches = image_text_batches(spec, key_caption_pixel, list, shuffle_buffer=1)
    samples = [sample for batch in batches if batch.data is not None for sample in batch.data]
    assert len({key for key, _, _ in samples}) == len(samples)
    return {key: (caption, pixel) for key, caption, pixel in samples}


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar}


def test_a_captioned_folder_becomes_shards_that_the_training_reader_reads(tmp_path):
    names = captioned_folder(tmp_path / "photos", 7)
    summary = make_shards(tmp_path / "photos", tmp_path / "shards", samples_per_shard=3, workers=2)

    assert (summary.shards, summary.written, summary.kept, summary.samples) == (3, 3, 0, 7)
    assert summary.skipped == {} and summary.failed == []
    assert summary.pattern == str(tmp_path / "shards" / "{000000..000002}.tar")
    assert expand_shards(str(tmp_path / "shards")) == expand_shards(summary.pattern)
    samples = read_back(summary.pattern)
    assert sorted(samples) == [f"{index:09d}" for index in range(7)]
    for position, name in enumerate(names):  # keys follow the sorted paths; captions stripped
        index = int(name[-6:-4])
        caption, pixel = samples[f"{position:09d}"]
        assert caption == f"photo number {index}" and abs(pixel - index * 10) <= 3

    shard = members(tmp_path / "shards" / "000000.tar")
    assert names[:3] == ["deep/er/img00.png", "deep/er/img02.bmp", "deep/er/img04.jpg"]
    assert list(shard) == [
        f"00000000{i}.{ext}" for i, image in enumerate(("png", "jpg", "jpg")) for ext in (image, "txt", "json")
    ]
    assert shard["000000000.png"] == (tmp_path / "photos" / names[0]).read_bytes()  # PNG and JPEG kept as they are
    assert shard["000000002.jpg"] == (tmp_path / "photos" / names[2]).read_bytes()
    assert Image.open(io.BytesIO(shard["000000001.jpg"])).format == "JPEG"  # BMP (any other format): as JPEG
    assert json.loads(shard["000000000.json"]) == {
        "key": "000000000", "url": names[0], "caption": "photo number 0", "width": 20, "height": 12,
    }  # fmt: skip
    stats = json.loads((tmp_path / "shards" / "000002_stats.json").read_text())
    assert stats == {"shard": "000002.tar", "entries": 1, "samples": 1, "skipped": {}, "skipped_samples": []}


def test_bad_samples_are_skipped_counted_and_named(tmp_path):
    root = tmp_path / "photos"
    captioned_folder(root, 2)  # deep/er/img00.png, top/img01.jpg
    (root / "a_broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (root / "a_broken.txt").write_text("broken")
    (root / "b_truncated.png").write_bytes(save(tmp_path / "t.png", 3).read_bytes()[:60])
    (root / "b_truncated.txt").write_text("truncated")
    save(root / "c_uncaptioned.png", 4)
    save(root / "d_empty.png", 5)
    (root / "d_empty.txt").write_text(" \n ")
    save(root / "e_latin1.png", 6)
    (root / "e_latin1.txt").write_bytes("caf\xe9".encode("latin-1"))

    summary = make_shards(root, tmp_path / "shards", samples_per_shard=4, workers=1)

    assert summary.samples == 2 and summary.shards == 2
    assert summary.skipped == {"corrupt_image": 2, "missing_caption": 1, "bad_caption": 2}
    named = "\n".join(summary.skipped_samples)
    for name in ("a_broken.jpg", "b_truncated.png", "c_uncaptioned.png", "d_empty.png", "e_latin1.png"):
        assert name in named
    assert "no caption file c_uncaptioned.txt" in named and "d_empty.png: empty caption" in named
    stats = json.loads((tmp_path / "shards" / "000000_stats.json").read_text())
    assert stats["samples"] == 0 and len(stats["skipped_samples"]) == 4  # the first four entries are all bad
    assert members(tmp_path / "shards" / "000000.tar") == {}  # an empty shard keeps the numbering whole
    assert sorted(caption for caption, _ in read_back(summary.pattern).values()) == [
        "photo number 0",
        "photo number 1",
    ]


def test_output_depends_on_the_source_only_not_on_the_workers(tmp_path):
    captioned_folder(tmp_path / "photos", 10)
    make_shards(tmp_path / "photos", tmp_path / "one", samples_per_shard=3, workers=1)
    make_shards(tmp_path / "photos", tmp_path / "three", samples_per_shard=3, workers=3)
    for number in range(4):
        name = f"{number:06d}.tar"
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "three" / name).read_bytes()


def test_a_rerun_writes_only_the_unfinished_shards(tmp_path):
    captioned_folder(tmp_path / "photos", 8)
    out = tmp_path / "shards"
    make_shards(tmp_path / "photos", out, samples_per_shard=2, workers=2)
    first = {path.name: path.read_bytes() for path in out.glob("*.tar")}
    # An interrupted run: shard 1 never finished (a temporary file, no stats), shard 3 is renamed but has no stats.
    (out / "000001.tar").rename(out / ".000001.tar.tmp")
    (out / "000001_stats.json").unlink()
    (out / "000003_stats.json").unlink()
    (out / "000000.tar").write_bytes(b"left alone")  # proof that finished shards are not rewritten

    summary = make_shards(tmp_path / "photos", out, samples_per_shard=2, workers=2)

    assert (summary.written, summary.kept, summary.samples) == (2, 2, 8)
    assert (out / "000000.tar").read_bytes() == b"left alone"
    for name in ("000001.tar", "000002.tar", "000003.tar"):
        assert (out / name).read_bytes() == first[name]
    assert not list(out.glob(".*"))  # no temporary file left


def test_a_shard_that_cannot_be_written_leaves_nothing_and_the_others_are_made(tmp_path, monkeypatch):
    captioned_folder(tmp_path / "photos", 6)
    out = tmp_path / "shards"
    write = make_shards_module.ShardWriter.write

    def full_disk_in_shard_1(self, key, *args, **kwargs):
        if self.first_shard == 1 and key.endswith("3"):
            raise OSError(28, "No space left on device")
        return write(self, key, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(make_shards_module.ShardWriter, "write", full_disk_in_shard_1)
        summary = make_shards(tmp_path / "photos", out, samples_per_shard=2, workers=1)
    assert summary.written == 2 and len(summary.failed) == 1
    assert "000001.tar: OSError: [Errno 28] No space left on device" in summary.failed[0]
    assert sorted(path.name for path in out.iterdir()) == [
        "000000.tar", "000000_stats.json", "000002.tar", "000002_stats.json", MANIFEST_NAME,
    ]  # fmt: skip

    summary = make_shards(tmp_path / "photos", out, samples_per_shard=2, workers=1)
    assert (summary.written, summary.kept, summary.samples, summary.failed) == (1, 2, 6, [])


def test_other_sources_options_and_foreign_shards_are_refused(tmp_path):
    captioned_folder(tmp_path / "photos", 4)
    out = tmp_path / "shards"
    make_shards(tmp_path / "photos", out, samples_per_shard=2, workers=1)
    with pytest.raises(UserError, match=r"samples_per_shard was 2, now 3.*same source and options"):
        make_shards(tmp_path / "photos", out, samples_per_shard=3)
    save(tmp_path / "photos" / "new.png", 9)
    with pytest.raises(UserError, match="source's images, captions or rows changed"):
        make_shards(tmp_path / "photos", out, samples_per_shard=2)

    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "00000.tar").write_bytes(b"")
    with pytest.raises(UserError, match="holds shards that `annofree data shards` did not make"):
        make_shards(tmp_path / "photos", tmp_path / "theirs")
    with pytest.raises(UserError, match="samples per shard must be at least 1"):
        make_shards(tmp_path / "photos", tmp_path / "other", samples_per_shard=0)
    with pytest.raises(UserError, match="no image files"):
        make_shards(tmp_path / "theirs", tmp_path / "other")
    with pytest.raises(UserError, match=r"give a folder of images with \.txt captions, or a table"):
        make_shards(tmp_path / "theirs" / "00000.tar", tmp_path / "other")


# ------------------------------------------------------------------------------------------------ tables


def write_table(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_a_csv_with_img2dataset_columns_and_relative_paths(tmp_path):
    for index in range(4):
        save(tmp_path / "data" / "images" / f"{index}.png", index)
    rows = [[f"images/{index}.png", f"caption, with comma {index}", "extra"] for index in range(4)]
    rows.insert(2, ["images/missing.png", "no such file", ""])
    table = write_table(tmp_path / "data" / "captions.csv", ["url", "caption", "other"], rows)

    summary = make_shards(table, tmp_path / "shards", samples_per_shard=10, workers=1)

    assert summary.samples == 4 and summary.skipped == {"missing_image": 1}
    assert summary.skipped_samples == ["captions.csv row 3 (images/missing.png): no such image file"]
    assert summary.pattern == str(tmp_path / "shards" / "000000.tar")
    samples = read_back(summary.pattern)
    assert sorted(samples.values()) == [(f"caption, with comma {index}", index * 10) for index in range(4)]
    manifest = json.loads((tmp_path / "shards" / MANIFEST_NAME).read_text())
    assert (manifest["image_column"], manifest["caption_column"], manifest["entries"]) == ("url", "caption", 5)


def test_a_tsv_with_open_clip_columns_and_named_columns(tmp_path):
    save(tmp_path / "a.png", 1)
    table = write_table(tmp_path / "t.tsv", ["Title", "filepath"], [["a title", str(tmp_path / "a.png")]])
    assert read_source(table).entries[0].caption == "a title"  # open_clip's names, any case; absolute paths
    table = write_table(tmp_path / "named.tsv", ["img", "words", "url"], [["a.png", "named", "x.png"]])
    source = read_source(table, image_column="img", caption_column="words")
    assert (source.image_column, source.entries[0].caption, source.entries[0].image) == (
        "img", "named", str(tmp_path / "a.png"),
    )  # fmt: skip
    with pytest.raises(UserError, match=r"named\.tsv: no column 'nope' \(its columns: img, words, url\)"):
        read_source(table, image_column="nope")
    with pytest.raises(UserError, match=r"no column named caption or title or text .*--caption-column"):
        read_source(table)


def test_a_url_column_is_refused_until_downloading_is_supported(tmp_path):
    table = write_table(tmp_path / "web.csv", ["url", "caption"], [["https://example.com/a.jpg", "a photo"]])
    with pytest.raises(UserError, match=r"web\.csv: row 1: 'https://example.com/a\.jpg' is a URL; downloading is not"):
        make_shards(table, tmp_path / "shards")
    assert not (tmp_path / "shards").exists()


def test_unreadable_tables_are_one_line_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty table"):
        read_source(tmp_path / "empty.csv")
    (tmp_path / "latin1.csv").write_bytes("url,caption\na.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        read_source(tmp_path / "latin1.csv")
    write_table(tmp_path / "header.csv", ["url", "caption"], [])
    with pytest.raises(UserError, match="no rows"):
        read_source(tmp_path / "header.csv")
    captioned_folder(tmp_path / "folder", 1)
    with pytest.raises(UserError, match="columns are for tables"):
        read_source(tmp_path / "folder", image_column="url")


def test_a_parquet_table(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    for index in range(3):
        save(tmp_path / f"{index}.jpg", index)
    table = pyarrow.table({"url": [f"{index}.jpg" for index in range(3)], "caption": ["a", None, "c"]})
    parquet.write_table(table, tmp_path / "part.parquet")
    summary = make_shards(tmp_path / "part.parquet", tmp_path / "shards", workers=1)
    assert summary.samples == 2 and summary.skipped == {"bad_caption": 1}  # a null caption is an empty one
    assert sorted(caption for caption, _ in read_back(summary.pattern).values()) == ["a", "c"]
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match=r"bad\.parquet: not a readable parquet file"):
        read_source(tmp_path / "bad.parquet")


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "part.parquet").write_bytes(b"PAR1")
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(
        UserError, match=r"part\.parquet: reading parquet needs pyarrow: pip install 'annofree\[parquet\]'"
    ):
        read_source(tmp_path / "part.parquet")
