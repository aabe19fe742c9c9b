"""demo_out/index.html: the results table of both methods, curves and overlays, relative links, escaping."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from annofree.demo.index import INDEX_NAME, render_index, write_index


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images, self.cells = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])

    def handle_data(self, data):
        if data.strip():
            self.cells.append(data.strip())


def _fake_demo(out: Path) -> None:
    gv, ds = out / "groupvit", out / "densesiam"
    for run in (gv, ds):
        run.mkdir(parents=True)
        (run / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
        Image.new("RGB", (4, 4)).save(run / "curves.png")
        for i in range(2):
            Image.new("RGB", (4, 4)).save(run / f"scene_{i}.png")
    (gv / "results.json").write_text(json.dumps({"miou": 0.4567, "miou_random_init": 0.1, "train_seconds": 12.3,
                                                 "train_images": 24, "per_class_iou": {"circle": 0.5}}))  # fmt: skip
    (ds / "results.json").write_text(json.dumps({"miou": 0.321, "miou_kmeans_pixels": 0.2, "num_clusters": 5,
                                                 "eval_short_side": 128}))  # fmt: skip
    (out / "data").mkdir()  # rendered scenes: not a run


def test_index_links_results_curves_and_overlays_of_both_methods(tmp_path):
    out = tmp_path / "demo_out"
    _fake_demo(out)
    path = write_index(out)
    assert path == out / INDEX_NAME
    page = _Collector()
    page.feed(path.read_text())
    assert {"groupvit/results.json", "densesiam/results.json", "groupvit/log.jsonl"} <= set(page.links)
    assert {"groupvit/curves.png", "densesiam/curves.png", "groupvit/scene_0.png", "densesiam/scene_1.png"} <= set(
        page.images
    )
    assert all((out / src).is_file() for src in page.images + page.links)  # every link resolves, relatively
    # The table: one column per method, rows only for the values some method has.
    cells = page.cells
    assert "0.457" in cells and "0.321" in cells and "0.200" in cells and "12 s" in cells and "5" in cells
    assert "mIoU, k-means on pixel colours" in cells and "loss, first log" not in cells
    assert "128 px" in cells and "scored at short side" in cells
    assert cells.index("groupvit") < cells.index("densesiam")
    assert "data" not in page.links


def test_index_of_an_empty_folder_and_names_are_escaped(tmp_path):
    assert "No run here yet" in render_index(tmp_path)
    run = tmp_path / "<b>odd"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"miou": "<script>"}))
    text = render_index(tmp_path)
    assert "<b>odd" not in text and "&lt;b&gt;odd" in text and "<script>" not in text
