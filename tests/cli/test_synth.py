"""``annofree synth scenes|textures``: both kinds write their layouts; bad sizes and counts are clear errors."""

from __future__ import annotations

from annofree import cli
from annofree.data.folder import SegmentationFolder


def test_synth_scenes_and_textures_write_their_layouts(tmp_path, capsys):
    assert cli.main(["synth", "scenes", str(tmp_path / "s"), "--train", "3", "--val", "2", "--size", "32",
                     "--workers", "1"]) == 0  # fmt: skip
    assert (tmp_path / "s" / "train" / "000000.tar").is_file() and len(SegmentationFolder(tmp_path / "s" / "val")) == 2
    assert cli.main(["synth", "textures", str(tmp_path / "t"), "--train", "3", "--val", "2", "--size", "32",
                     "--workers", "1"]) == 0  # fmt: skip
    assert len(list((tmp_path / "t" / "train").glob("*.jpg"))) == 3
    assert (tmp_path / "t" / "val" / "things.txt").is_file() and len(SegmentationFolder(tmp_path / "t" / "val")) == 2
    printed = capsys.readouterr().out
    assert "3 unlabelled images" in printed and "2 scenes with masks" in printed


def test_synth_refuses_tiny_images_and_empty_sets(tmp_path, capsys):
    assert cli.main(["synth", "textures", str(tmp_path / "t"), "--size", "8"]) == 2
    assert "--size must be at least 16" in capsys.readouterr().err
    assert cli.main(["synth", "textures", str(tmp_path / "t"), "--train", "0", "--val", "0"]) == 2
    assert "not both 0" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_synth_refuses_a_non_empty_folder_unless_overwrite_which_clears_only_its_own_parts(tmp_path, capsys):
    out = tmp_path / "s"
    base = ["synth", "scenes", str(out), "--train", "3", "--val", "1", "--size", "16", "--workers", "1"]
    assert cli.main([*base, "--per-shard", "1"]) == 0
    assert sorted(path.name for path in (out / "train").iterdir()) == ["000000.tar", "000001.tar", "000002.tar"]
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()

    assert cli.main([*base, "--seed", "1"]) == 2  # the second run would leave 000001.tar, 000002.tar of the first
    error = capsys.readouterr().err
    assert f"{out}: not empty" in error and "--overwrite" in error and len(error.strip().splitlines()) == 1
    assert len(list((out / "train").iterdir())) == 3

    assert cli.main([*base, "--seed", "1", "--overwrite"]) == 0
    assert [path.name for path in (out / "train").iterdir()] == ["000000.tar"]  # old shards gone
    assert (out / "notes.txt").read_text() == "mine"  # what synth does not write is kept
    (tmp_path / "file").write_text("")
    assert cli.main(["synth", "textures", str(tmp_path / "file"), "--overwrite"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
