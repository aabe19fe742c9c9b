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
