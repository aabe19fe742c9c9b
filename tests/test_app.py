"""The web app's work without a browser: requests, the limits (each followed by a normal request), the page through
a running server (gradio_client and plain HTTP). The browser test is tests/test_app_browser.py."""

from __future__ import annotations

import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import annofree
import annofree.app
from annofree.app import (
    Limits,
    SegmentApp,
    check_pixels,
    legend_html,
    parse_class_text,
    read_upload,
    working_size,
    write_examples,
)
from annofree.errors import UserError
from tests.tiny import save_tiny_densesiam, save_tiny_groupvit

LIMITS = Limits(max_upload_bytes=64 * 1024, max_pixels=200 * 200, max_classes=5)


@pytest.fixture(scope="module")
def groupvit(tmp_path_factory):
    return annofree.load(save_tiny_groupvit(tmp_path_factory.mktemp("groupvit")).parent)


@pytest.fixture(scope="module")
def app(groupvit):
    return SegmentApp(groupvit, limits=LIMITS, short_side=32, bg_thresh=0.5, title="tiny")


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def _assert_ok(result, names=("background", "circle", "star")):
    assert result.ok, result.message
    assert isinstance(result.overlay, Image.Image) and result.overlay.size == (5 * 56, 5 * 40)  # enlarged to show
    assert isinstance(result.groups, Image.Image) and "stage" not in result.message
    assert [name for name, _, _ in result.shares] == list(names)
    assert sum(share for _, share, _ in result.shares) == pytest.approx(1.0)
    for name in names:
        assert f">{name}<" in result.legend_html


def test_a_request_gives_the_overlay_legend_shares_and_groups(app, photo):
    result = app.segment(photo, "circle, star", "whole", 0.5)
    _assert_ok(result)
    assert result.message.startswith("56x40 px, whole image, background threshold 0.50")
    # The overlay is the image blended with the label colours (no legend drawn into it: the page shows one),
    # enlarged 5 times by nearest neighbour.
    pixels = np.asarray(result.overlay)
    assert pixels.shape == (200, 280, 3)
    np.testing.assert_array_equal(pixels[::5, ::5], pixels[4::5, 4::5])
    # image | stage 1 | stage 2, enlarged for readability, with a title strip.
    assert result.groups.width > 3 * 280 and result.groups.height > 200
    slide = app.segment(photo, "circle, star", "slide", 0.2)
    _assert_ok(slide)
    assert "sliding window" in slide.message


def test_an_oversized_upload_is_refused_and_the_next_request_succeeds(app, photo, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (190, 190, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > LIMITS.max_upload_bytes
    result = app.segment(big, "circle, star")
    assert not result.ok and result.overlay is None and result.legend_html == ""
    assert "files up to 64.0 KB are accepted" in result.message and result.message.startswith("Refused:")
    _assert_ok(app.segment(photo, "circle, star"))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` but that holds almost no data (a decompression bomb's
    signature: a few bytes announce gigapixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_too_many_pixels_are_refused_from_the_header_before_decoding(app, photo, tmp_path, monkeypatch):
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("an image over the pixel limit was decoded")

    with monkeypatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", no_decoding)
        result = app.segment(_png_header_only(tmp_path / "wide.png", 300, 200), "circle, star")
        assert not result.ok and "300x200 = 60,000 pixels; images up to 40,000 pixels" in result.message
        bomb = app.segment(_png_header_only(tmp_path / "bomb.png", 100_000, 100_000), "circle, star")
        assert not bomb.ok and "pixels" in bomb.message and "AssertionError" not in bomb.message
    _assert_ok(app.segment(photo, "circle, star"))


def test_the_pixels_computed_on_after_the_resize_are_limited_before_decoding(groupvit, photo, tmp_path, monkeypatch):
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("an image over the pixel limit was decoded")

    # The strip: 20 Mpx, under the default limit, but 448 x 22.4M once its short side is resized to 448.
    app = SegmentApp(groupvit, short_side=448)
    strip = _png_header_only(tmp_path / "strip.png", 1_000_000, 20)
    with monkeypatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", no_decoding)
        result = app.segment(strip, "circle, star")
        assert not result.ok and "AssertionError" not in result.message, result.message
        assert "1000000x20; with its shorter side resized to 448 the model would compute on 22400000x448" in (
            result.message
        )
        assert "above the 25.0 megapixels accepted" in result.message
        # Small limits: 8 x 4000 is 32,000 pixels (under 40,000), 32 x 16,000 after the app's short side 32.
        small = SegmentApp(groupvit, limits=LIMITS, short_side=32)
        refused = small.segment(_png_header_only(tmp_path / "thin.png", 4000, 8), "circle, star")
        assert not refused.ok and "16000x32 = 512,000 pixels, above the 40,000 pixels accepted" in refused.message
    assert SegmentApp(groupvit, limits=LIMITS, short_side=0).short_side is None  # 0 keeps the size, as everywhere
    check_pixels(8, 4000, None, LIMITS)  # kept at its size, the thin image fits
    with pytest.raises(UserError, match="would compute on 16000x32"):
        check_pixels(8, 4000, 32, LIMITS)
    assert working_size(2000, 3000, 448) == (448, 672) and working_size(20, 10**6, 448) == (448, 22_400_000)
    _assert_ok(small.segment(photo, "circle, star"))


def test_a_non_image_is_refused_and_the_next_request_succeeds(app, photo, tmp_path):
    for name, data in {
        "notes.png": b"just some text, named like an image",
        "empty.jpg": b"",
        "drawing.eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",  # never handed to Ghostscript
    }.items():
        (tmp_path / name).write_bytes(data)
        result = app.segment(tmp_path / name, "circle, star")
        assert not result.ok and "not an image" in result.message, name
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(photo.read_bytes()[:200])
    broken = app.segment(truncated, "circle, star")
    assert not broken.ok and "could not be decoded" in broken.message
    _assert_ok(app.segment(photo, "circle, star"))


def test_ten_thousand_class_names_are_refused_and_the_next_request_succeeds(app, photo):
    result = app.segment(photo, ", ".join(f"class {i}" for i in range(10_000)))
    assert not result.ok and "10000 class names given; at most 5 are accepted" in result.message
    _assert_ok(app.segment(photo, "circle, star"))


def test_bad_requests_get_messages(app, photo):
    cases = {
        "upload an image": (None, "circle"),
        "type the class names": (photo, " , "),
        "duplicated class name": (photo, "circle, Circle"),
        "'background' is implicit": (photo, "background, circle"),
        "limited to 100 characters": (photo, "x" * 101),
    }
    for expected, (image, text) in cases.items():
        result = app.segment(image, text)
        assert not result.ok and expected in result.message, (expected, result.message)
    assert "must lie in [0, 1]" in app.segment(photo, "circle", "whole", 1.5).message
    assert "unknown mode" in app.segment(photo, "circle", "tiles", 0.5).message


def test_with_the_similarity_rule_the_threshold_is_a_cosine(groupvit, photo):
    app = SegmentApp(groupvit, limits=LIMITS, short_side=32, bg_rule="similarity", bg_thresh=0.2)
    result = app.segment(photo, "circle", "whole", -0.5)
    assert result.ok and "background threshold -0.50" in result.message
    assert "[-1, 1] with the similarity rule" in app.segment(photo, "circle", "whole", -1.5).message
    with pytest.raises(UserError, match="unknown background rule 'cosine'"):
        SegmentApp(groupvit, limits=LIMITS, bg_rule="cosine")


def test_an_internal_error_is_reported_and_the_app_goes_on(groupvit, photo, monkeypatch, capsys):
    app = SegmentApp(groupvit, limits=LIMITS, short_side=32)

    def broken(*args):
        raise RuntimeError("out of luck")

    monkeypatch.setattr(app, "_segmenter", broken)
    result = app.segment(photo, "circle, star")
    assert not result.ok and result.message == "Error: RuntimeError: out of luck"
    assert "Traceback" in capsys.readouterr().err  # the server's log keeps the details
    monkeypatch.undo()
    _assert_ok(app.segment(photo, "circle, star"))


def test_class_names_are_escaped_in_the_legend(app, photo):
    result = app.segment(photo, "<img src=x onerror=alert(1)>, a & b")
    assert result.ok
    assert "<img" not in result.legend_html and "&lt;img src=x onerror=alert(1)&gt;" in result.legend_html
    assert "a &amp; b" in result.legend_html
    assert legend_html([]) == ""


def test_parse_class_text():
    assert parse_class_text(" cat, dog ,grass, ", LIMITS) == ["cat", "dog", "grass"]
    with pytest.raises(UserError, match="6 class names"):
        parse_class_text("a,b,c,d,e,f", LIMITS)
    with pytest.raises(UserError, match="too long"):
        parse_class_text("a" * 1000, LIMITS)


def test_large_images_are_shown_smaller_but_counted_at_full_size(groupvit, tmp_path):
    path = tmp_path / "wide.png"
    labels_side = np.zeros((60, 300, 3), np.uint8)
    labels_side[:, 150:] = 255
    Image.fromarray(labels_side).save(path)
    app = SegmentApp(groupvit, short_side=32, display_side=100)
    result = app.segment(path, "circle, star")
    assert result.ok and result.overlay.size == (100, 20)
    assert "300x60 px" in result.message


def test_densesiam_weights_show_the_cluster_map(tmp_path, photo):
    model = annofree.load(save_tiny_densesiam(tmp_path / "ds", clusters=4).parent)
    # The photo (40 x 56) is computed on at 320 x 448: a limit that allows that.
    app = SegmentApp(model, limits=Limits(max_upload_bytes=LIMITS.max_upload_bytes, max_pixels=320 * 448))
    assert app.kind == "densesiam" and app.short_side == 320
    result = app.segment(photo, "")
    assert result.ok and result.groups is None and result.overlay.size == (280, 200)
    assert [name for name, _, _ in result.shares] == [f"cluster {i}" for i in range(4)]
    assert sum(share for _, share, _ in result.shares) == pytest.approx(1.0)
    assert "class names are not used" in app.segment(photo, "cat").message
    (tmp_path / "notes.txt").write_text("not an image")
    assert "not an image" in app.segment(tmp_path / "notes.txt", "").message
    assert app.segment(photo, "").ok


def test_the_page_adapts_to_the_weights(app, tmp_path):
    pytest.importorskip("gradio")
    from annofree.app import build_blocks

    def visible(blocks) -> dict[str, bool]:
        return {c["props"].get("elem_id"): c["props"].get("visible", True) for c in blocks.config["components"]}

    examples = write_examples(tmp_path / "examples", synthetic=1)
    zero_shot = visible(build_blocks(app, examples))
    assert all(zero_shot[name] for name in ("image", "classes", "mode", "bg", "run", "overlay", "legend", "groups"))
    model = annofree.load(save_tiny_densesiam(tmp_path / "ds").parent)
    clusters = visible(build_blocks(SegmentApp(model), examples))
    assert clusters["image"] and clusters["overlay"] and clusters["legend"]
    assert not clusters["classes"] and not clusters["mode"] and not clusters["bg"]  # clusters have no names


def test_examples_are_real_photos_and_synthetic_scenes_within_the_default_limits(tmp_path):
    examples = write_examples(tmp_path / "examples")
    names = [path.stem for path, _ in examples]
    assert {"astronaut", "chelsea", "coffee", "rocket"} <= set(names)  # scikit-image's photos, copied at run time
    assert names[-2:] == ["shapes_0", "shapes_1"]
    for path, classes in examples:
        image = read_upload(path, Limits())
        assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 200
        assert len(parse_class_text(classes, Limits())) >= 3


def test_limits_must_be_positive():
    with pytest.raises(UserError, match="max_classes"):
        Limits(max_classes=0)


# ----------------------------------------------------------------------------- through a running server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(app, tmp_path_factory):
    pytest.importorskip("gradio")
    from annofree.app import serve

    examples = write_examples(tmp_path_factory.mktemp("examples"), synthetic=1)
    port = free_port()
    blocks = serve(app, port=port, examples=examples[-1:], block=False, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    blocks.close()


@pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")  # gradio's use of pandas
def test_the_server_answers_and_survives_bad_requests(server, photo, tmp_path):
    import httpx
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)

    def segment(image: Path, classes: str):
        return client.predict(handle_file(str(image)), classes, "whole", 0.5, api_name="/segment")

    overlay, legend, groups, status = segment(photo, "circle, star")
    assert Path(overlay).is_file() and Path(groups).is_file() and ">circle<" in legend, status
    assert Image.open(overlay).size == (280, 200)

    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    overlay, legend, groups, status = segment(notes, "circle, star")
    assert overlay is None and legend == "" and "not an image" in status

    overlay, _, _, status = segment(photo, ",".join(f"c{i}" for i in range(10_000)))
    assert overlay is None and "10000 class names" in status

    # An upload over the limit is refused by the server itself, before it is stored.
    big = np.random.default_rng(2).integers(0, 256, 2 * LIMITS.max_upload_bytes, dtype=np.uint8).tobytes()
    response = httpx.post(f"{server}gradio_api/upload", files={"files": ("big.png", big, "image/png")}, timeout=30)
    assert response.status_code == 413 and "max" in response.text.lower()

    overlay, legend, _, status = segment(photo, "circle, star")
    assert overlay is not None and ">star<" in legend and status.startswith("56x40 px")
    page = httpx.get(server, timeout=30)
    assert page.status_code == 200 and "annofree" in page.text
    assert not Path(annofree.app.__file__).with_suffix(".pyi").exists()  # gradio wrote no stub into the package
