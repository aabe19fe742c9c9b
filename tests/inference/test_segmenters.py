"""The one door to a segmenter: each method's kind, one result type, and a third method that needs no CLI change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annofree import cli
from annofree.errors import UserError
from annofree.inference.clusters import DENSESIAM_SHORT_SIDE, ClusterSegmenter
from annofree.inference.result import SegmentationResult
from annofree.inference.segmenters import (
    SEGMENTERS,
    SegmenterKind,
    build_segmenter,
    register_segmenter,
    segmenter_kind,
)
from annofree.inference.settings import DEFAULTS
from annofree.inference.zero_shot import ZeroShotSegmenter
from tests.inference.conftest import word_tokenizer
from tests.tiny import tiny_densesiam, tiny_groupvit


def _rgb(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_each_model_finds_its_kind_and_both_segmenters_return_one_result_type():
    groupvit, densesiam = tiny_groupvit(vocab_size=100).eval(), tiny_densesiam(clusters=3)
    assert segmenter_kind(groupvit).named_classes and segmenter_kind(groupvit).short_side == DEFAULTS.short_side == 448
    assert not segmenter_kind(densesiam).named_classes and segmenter_kind(densesiam).short_side == 320
    zero_shot = build_segmenter(groupvit, ["circle", "star"], tokenizer=word_tokenizer, short_side=0, bg_thresh=0.4)
    clusters = build_segmenter(densesiam, short_side=0)
    assert isinstance(zero_shot, ZeroShotSegmenter) and isinstance(clusters, ClusterSegmenter)
    assert zero_shot.settings.bg_thresh == 0.4 and zero_shot.short_side is None and clusters.short_side is None
    image = _rgb(20, 28)
    expected = ((zero_shot, ["background", "circle", "star"]), (clusters, ["cluster 0", "cluster 1", "cluster 2"]))
    for segmenter, labels in expected:
        result = segmenter.segment(image)
        assert isinstance(result, SegmentationResult) and result.class_names == labels == segmenter.labels
        assert result.label_map.shape == (20, 28) and result.logits.shape[0] == len(labels)
        assert result.scores.shape == (len(labels), 20, 28)
        assert torch.equal(result.scores.argmax(0), torch.from_numpy(result.label_map))
        assert sum(result.fractions().values()) == pytest.approx(1.0)
        assert segmenter.notes()
    assert build_segmenter(densesiam).short_side == DENSESIAM_SHORT_SIDE


def test_class_names_go_where_they_are_read_and_an_unknown_model_is_one_line():
    with pytest.raises(UserError, match="DenseSiam weights segment into unnamed clusters"):
        build_segmenter(tiny_densesiam(clusters=3), ["cat"])
    with pytest.raises(UserError, match="zero-shot segmentation needs class names"):
        build_segmenter(tiny_groupvit(vocab_size=100))
    with pytest.raises(UserError, match=r"a Linear has no segmenter \(segmenters exist for: densesiam, groupvit\)"):
        segmenter_kind(torch.nn.Linear(2, 2))


class _Halves:
    """A third method's segmenter: the left half is label 0, the right half label 1."""

    def __init__(self, short_side):
        self.labels = ["left", "right"]
        self.short_side = short_side

    def notes(self):
        return ["halves, as always"]

    def segment_batch(self, images):
        return [self.segment(image) for image in images]

    def segment(self, image):
        height, width = np.asarray(image).shape[:2]
        label_map = (np.arange(width)[None].repeat(height, 0) >= width // 2).astype(np.int64)
        logits = torch.stack([torch.from_numpy(1.0 - label_map), torch.from_numpy(label_map * 1.0)]).float()
        return SegmentationResult(label_map, list(self.labels), logits)


class _HalvesModel:
    method = "halves"


@pytest.fixture
def halves():
    kind = register_segmenter(
        SegmenterKind("halves", "Halves", lambda model, names, settings, source, options: _Halves(7), False, 7)
    )
    yield kind
    del SEGMENTERS["halves"]


def test_a_third_method_registers_its_segmenter_and_the_command_line_takes_it_as_it_is(
    halves, tmp_path, monkeypatch, capsys
):
    from PIL import Image

    import annofree.cli.common as common

    Image.fromarray(_rgb(10, 12)).save(tmp_path / "a.png")
    monkeypatch.setattr(common, "load_model", lambda weights, device: _HalvesModel())
    monkeypatch.setattr(cli, "COMMANDS", ["segment"])
    code = cli.main(["segment", str(tmp_path / "a.png"), "--weights", "w", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "halves, as always" in captured.err and "2 clusters (left 50.0%, right 50.0%)" in captured.out
    written = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    np.testing.assert_array_equal(written, _Halves(7).segment(_rgb(10, 12)).label_map)
    assert (tmp_path / "out" / "a_overlay.png").is_file() and not (tmp_path / "out" / "a.json").exists()
    argv = ["segment", str(tmp_path / "a.png"), "--weights", "w", "--out", str(tmp_path / "o"), "--vis", "groups"]
    code = cli.main(argv)
    assert code == 2 and "Halves has no grouping stages" in capsys.readouterr().err
