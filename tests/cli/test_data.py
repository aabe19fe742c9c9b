"""``annofree data shards``: captioned images become shards that ``annofree train groupvit`` trains on; data made
by hand (a table, an ungrouped tar) given to ``train`` is a one-line error that says how to make shards."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import yaml
from PIL import Image

from annofree import cli
from annofree.weights import read_weights
from tests.methods.test_groupvit import TINY_MODEL


def captioned_folder(root, count: int) -> None:
    for index in range(count):
        folder = root / ("a" if index % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 40, 3), index * 20, dtype=np.uint8)).save(folder / f"{index}.jpg")
        (folder / f"{index}.txt").write_text(f"a photo of a {('cat', 'dog')[index % 2]}")


def tiny_config(tmp_path):
    config = {
        "method": "groupvit",
        "model": TINY_MODEL,
        "data": {"image_size": 32, "num_prompts": 1, "shuffle_buffer": 4},
        "train": {"steps": 2, "batch_size": 4, "num_workers": 0, "log_every": 1, "tensorboard": False,
                  "device": "cpu"},
    }  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def one_line_error(capsys) -> str:
    """The error line on stderr (progress bars may come before it), which must be the only one and not a traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("annofree: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_shards_from_a_folder_train_with_annofree_train(tmp_path, capsys):
    captioned_folder(tmp_path / "photos", 10)
    out = tmp_path / "shards"
    assert cli.main(["data", "shards", str(tmp_path / "photos"), str(out), "--shard-size", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"10 samples in 3 shards: {out}/{{000000..000002}}.tar" in printed
    assert f"train on them with --data {out}" in printed

    run = tmp_path / "run"
    assert (
        cli.main(["train", "groupvit", "--config", tiny_config(tmp_path), "--data", str(out), "--out", str(run)]) == 0
    )
    weights, _, _ = read_weights(run)
    assert weights and "step 2/2" in capsys.readouterr().out

    assert cli.main(["data", "shards", str(tmp_path / "photos"), str(out), "--shard-size", "4", "--no-progress"]) == 0
    assert "(3 kept from an earlier run)" in capsys.readouterr().out


def test_skipped_samples_are_named_and_nothing_usable_is_an_error(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (tmp_path / "bad" / "x.txt").write_text("broken")
    Image.new("RGB", (8, 8)).save(tmp_path / "bad" / "y.png")
    assert cli.main(["data", "shards", str(tmp_path / "bad"), str(tmp_path / "out"), "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "skipped 2 (1 corrupt_image, 1 missing_caption)" in printed
    assert "  x.jpg: not a readable image" in printed and "  y.png: no caption file y.txt" in printed
    assert "no sample could be made" in printed


def test_bad_sources_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "web.csv").write_text("url,caption\nhttp://example.com/a.jpg,a cat\n")
    assert cli.main(["data", "shards", str(tmp_path / "web.csv"), str(tmp_path / "out")]) == 2
    assert "is a URL; downloading is not supported yet" in one_line_error(capsys)
    assert cli.main(["data", "shards", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert "no such folder or file" in one_line_error(capsys)
    with pytest.raises(SystemExit):
        cli.main(["data", "shards", str(tmp_path / "web.csv")])  # OUT is required


def write_ungrouped_tar(path, folder_count: int = 3) -> None:
    """``tar cf x.tar -C folder .`` on a file system that lists the images before the captions."""
    with tarfile.open(path, "w") as tar:
        for name in [f"./{i}.jpg" for i in range(folder_count)] + [f"./{i}.txt" for i in range(folder_count)]:
            buffer = io.BytesIO()
            if name.endswith(".jpg"):
                Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
            else:
                buffer.write(b"a caption")
            info = tarfile.TarInfo(name)
            info.size = buffer.tell()
            buffer.seek(0)
            tar.addfile(info, buffer)


@pytest.mark.parametrize("data", ["captions.csv", "x.tar"])
def test_train_on_data_made_by_hand_says_how_to_make_shards(tmp_path, capsys, data):
    (tmp_path / "captions.csv").write_text("url,caption\na.jpg,a cat\n")
    write_ungrouped_tar(tmp_path / "x.tar")
    command = ["train", "groupvit", "--config", tiny_config(tmp_path), "--data", str(tmp_path / data)]
    assert cli.main([*command, "--out", str(tmp_path / "run")]) == 2
    error = one_line_error(capsys)
    assert "annofree data shards" in error
    if data == "x.tar":
        assert "x.tar: samples are not grouped by key" in error and "tar --sort=name" in error
    else:
        assert f"{data}: a table, not webdataset shards" in error


def test_check_an_img2dataset_folder_then_train_on_it(tmp_path, capsys):
    import json

    from tests.data.test_img2dataset import img2dataset_folder

    folder = img2dataset_folder(tmp_path)
    report = tmp_path / "check.json"
    assert cli.main(["data", "check", str(folder), "--json", str(report), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"{folder}/00000.tar: 3 samples; 1 corrupt (1 bad_caption); tokens 6/6/7/7 (min/median/p95/max)" in printed
    assert "img2dataset downloaded 4 of 5" in printed
    assert "total, 2 of 2 shards: 6 samples; 2 corrupt (2 bad_caption)" in printed
    assert f"  {folder}/00001.tar:000010002: empty caption" in printed
    written = json.loads(report.read_text())
    assert written["total"]["samples"] == 6 and len(written["shards"]) == 2 and written["context_length"] == 77

    # the config's text context (16 tokens in the tiny model): nothing here is that long
    assert cli.main(["data", "check", f"{folder}/{{00000..00001}}.tar", "--config", tiny_config(tmp_path),
                     "--max-shards", "1", "--no-progress"]) == 0  # fmt: skip
    assert "total, 1 of 2 shards: 3 samples" in capsys.readouterr().out
    run = tmp_path / "run"
    assert cli.main(["train", "groupvit", "--config", tiny_config(tmp_path), "--data", str(folder),
                     "--out", str(run), "train.batch_size=2"]) == 0  # fmt: skip
    assert "step 2/2" in capsys.readouterr().out


def test_check_reports_unreadable_shards_without_a_traceback(tmp_path, capsys):
    captioned_folder(tmp_path / "photos", 4)
    out = tmp_path / "shards"
    assert cli.main(["data", "shards", str(tmp_path / "photos"), str(out), "--shard-size", "2", "--no-progress"]) == 0
    (out / "000001.tar").write_bytes(b"garbage" * 100)
    capsys.readouterr()
    assert cli.main(["data", "check", str(out), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "total, 2 of 2 shards: 2 samples" in captured.out and "Traceback" not in captured.out + captured.err
    assert f"annofree: error: {out}/000001.tar: damaged shard" in captured.out
    assert cli.main(["data", "check", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "no such shard file or directory" in one_line_error(capsys)


def test_check_takes_only_a_groupvit_config(tmp_path, capsys):
    captioned_folder(tmp_path / "photos", 2)
    out = tmp_path / "shards"
    assert cli.main(["data", "shards", str(tmp_path / "photos"), str(out), "--no-progress"]) == 0
    config = tmp_path / "ds.yaml"
    config.write_text(yaml.safe_dump({"method": "densesiam"}))
    assert cli.main(["data", "check", str(out), "--config", str(config), "--no-progress"]) == 2
    assert "--config takes a GroupViT training config" in one_line_error(capsys)
