"""img2dataset's own output trains as it is.

The folder below is built the way img2dataset (``--output_format webdataset``) writes one (facts from
rom1504/img2dataset's README, writer.py, logger.py and downloader.py, and webdataset's TarWriter):

- per shard ``NNNNN.tar`` (5 digits: ``oom_shard_count`` 5), ``NNNNN.parquet`` (one row of metadata per URL,
  failed downloads included) and ``NNNNN_stats.json`` (counts of the shard's downloads); a ``_tmp`` folder while
  it runs;
- a sample key is ``shard * 10**4 + index`` in 9 digits (``number_sample_per_shard`` 10000: 4 digits), its
  members ``KEY.jpg``, ``KEY.json`` (the metadata, ``indent=4``) and ``KEY.txt`` (the ``--caption_col``), in
  sorted extension order, mode 0o444, owner ``bigdata``;
- a failed download has a parquet row but no member in the tar; a sample whose caption cell was empty gets an
  empty ``.txt``; without ``--caption_col`` no ``.txt`` is written at all.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annofree.data.shards import expand_shards, image_text_batches
from annofree.methods.base import LoaderSpec
from annofree.methods.groupvit import collate, make_sample
from tests.methods.test_groupvit import options

SAMPLES_PER_SHARD_DIGITS = 4  # img2dataset: ceil(log10(number_sample_per_shard)) for its default 10000


def jpeg(value: int, size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def img2dataset_key(shard: int, index: int) -> str:
    return f"{shard * 10**SAMPLES_PER_SHARD_DIGITS + index:0{5 + SAMPLES_PER_SHARD_DIGITS}d}"


def write_img2dataset_shard(folder: Path, shard: int, rows: list[dict], save_caption: bool = True) -> None:
    """One shard as img2dataset writes it. ``rows``: ``{"caption", "ok"}`` per URL of the shard's input;
    rows that are not ok are failed downloads (metadata only)."""
    import pyarrow as pa
    import pyarrow.parquet as parquet

    metadata = []
    with tarfile.open(folder / f"{shard:05d}.tar", "w|") as tar:
        for index, row in enumerate(rows):
            key = img2dataset_key(shard, index)
            meta = {
                "url": f"https://example.invalid/{key}.jpg",
                "caption": row["caption"] if save_caption else None,
                "key": key,
                "status": "success" if row["ok"] else "failed_to_download",
                "error_message": None if row["ok"] else "HTTP Error 404: Not Found",
                "width": 48 if row["ok"] else None,
                "height": 40 if row["ok"] else None,
                "original_width": 96 if row["ok"] else None,
                "original_height": 80 if row["ok"] else None,
                "exif": "{}" if row["ok"] else None,
                "sha256": "0" * 64 if row["ok"] else None,
            }
            metadata.append(meta)
            if not row["ok"]:
                continue
            members = {"jpg": jpeg(20 * index + 10), "json": json.dumps(meta, indent=4).encode()}
            if save_caption:
                members["txt"] = (row["caption"] or "").encode()
            for extension in sorted(members):  # webdataset's TarWriter writes a sample's members sorted
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mtime, info.mode = len(members[extension]), time.time(), 0o444
                info.uname = info.gname = "bigdata"
                tar.addfile(info, io.BytesIO(members[extension]))
    parquet.write_table(pa.Table.from_pylist(metadata), folder / f"{shard:05d}.parquet")
    successes = sum(row["ok"] for row in rows)
    stats = {
        "count": len(rows),
        "successes": successes,
        "failed_to_download": len(rows) - successes,
        "failed_to_resize": 0,
        "duration": 1.5,
        "status_dict": {"success": successes, "HTTP Error 404: Not Found": len(rows) - successes},
    }
    (folder / f"{shard:05d}_stats.json").write_text(json.dumps(stats, indent=4))


CAPTIONS = [
    "a dog on a red sofa",
    "two cats sleeping in the sun",
    "",  # an empty caption cell: img2dataset writes an empty .txt
    "a boat on a lake at dawn",
    "children playing football in a park",
]


def img2dataset_folder(root: Path, save_caption: bool = True) -> Path:
    """Two shards of five URLs each; in each shard, URL 1 failed to download and URL 2 had an empty caption."""
    folder = root / "cc3m"
    folder.mkdir()
    (folder / "_tmp").mkdir()  # img2dataset's working folder, left behind by an interrupted run
    for shard in range(2):
        rows = [{"caption": caption, "ok": index != 1} for index, caption in enumerate(CAPTIONS)]
        write_img2dataset_shard(folder, shard, rows, save_caption)
    return folder


def training_samples(data: str, num_workers: int = 0) -> tuple[list[dict], dict[str, int]]:
    """Every sample GroupViT's training reader makes of ``data`` (batches of 1), and the drops by reason."""
    sample_fn = _GroupViTSample()
    spec = LoaderSpec(data=data, batch_size=1, num_workers=num_workers)
    samples, reasons = [], {}
    for batch in image_text_batches(spec, sample_fn, _keep_caption, shuffle_buffer=1):
        for reason, count in batch.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
        if batch.data is not None:
            samples.extend(batch.data)
    return samples, reasons


class _GroupViTSample:
    """GroupViT's own sample function, keeping the key and caption beside its output (picklable)."""

    def __call__(self, key, image, caption, rng):
        return {"key": key, "caption": caption, **make_sample(options(), key, image, caption, rng)}


def _keep_caption(samples: list[dict]) -> list[dict]:
    return samples


def test_the_folder_and_brace_patterns_pick_only_the_tars(tmp_path):
    folder = img2dataset_folder(tmp_path)
    assert sorted(path.name for path in folder.iterdir()) == [
        "00000.parquet", "00000.tar", "00000_stats.json", "00001.parquet", "00001.tar", "00001_stats.json", "_tmp",
    ]  # fmt: skip
    tars = [str(folder / "00000.tar"), str(folder / "00001.tar")]
    assert expand_shards(str(folder)) == tars
    assert expand_shards(f"{folder}/{{00000..00001}}.tar") == tars
    assert expand_shards(str(folder / "00001.tar")) == tars[1:]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_img2dataset_shards_train_as_they_are(tmp_path, num_workers):
    folder = img2dataset_folder(tmp_path)
    samples, reasons = training_samples(f"{folder}/{{00000..00001}}.tar", num_workers)

    # Failed downloads are not in the tars; the empty caption is counted and skipped; nothing else is lost.
    expected = {img2dataset_key(shard, index) for shard in range(2) for index in (0, 3, 4)}
    assert {sample["key"] for sample in samples} <= expected
    if num_workers == 0:  # with workers the epoch may leave out each worker's last batch (shards.py)
        assert {sample["key"] for sample in samples} == expected
        assert reasons == {"bad_caption": 2}
    for sample in samples:
        index = int(sample["key"][-SAMPLES_PER_SHARD_DIGITS:])
        assert sample["caption"] == CAPTIONS[index]  # the .txt, as --caption_col chose it; the .json is ignored
        assert sample["image"].shape == (3, 24, 24)
        assert sample["prompts"].shape == (3, 16)
    batch = collate([{name: value for name, value in s.items() if name not in ("key", "caption")} for s in samples])
    assert batch["image"].shape[0] == len(samples)


def test_without_a_caption_column_every_sample_is_reported_missing_its_caption(tmp_path):
    folder = img2dataset_folder(tmp_path, save_caption=False)
    samples, reasons = training_samples(str(folder))
    assert samples == [] and reasons == {"missing_caption": 8}
