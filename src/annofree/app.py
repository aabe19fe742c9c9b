"""The local web app (``annofree app``): segment an image in the browser with your own weights, offline.

Library first: :class:`SegmentApp` does the work in plain Python (read and check the upload, segment, draw) and
never raises: a refused or failed request comes back as an :class:`AppResult` with a message, so one bad
request never stops the server. :func:`build_blocks` lays the Gradio page over it and :func:`serve` starts it
(on loopback unless told otherwise); gradio is imported only there.

With GroupViT weights the page takes class names (comma separated), whole-image or sliding-window inference
and the background threshold, and shows the overlay with its legend, each class's share of the pixels and the
groups of each grouping stage side by side. With DenseSiam weights it shows the cluster map (no class names).

Limits (:class:`Limits`, the CLI's ``--max-upload-mb``, ``--max-pixels``, ``--max-classes``): a file larger
than the upload limit is refused (by the server before it is stored, and again here), an image is measured
from its header before any pixel is decoded (no decompression bomb), only common raster formats are opened
(never EPS and the like), and the class list is counted before it is split.

Example:
    >>> app = SegmentApp(annofree.load("runs/tiny"))  # doctest: +SKIP
    >>> result = app.segment("photo.jpg", "cat, dog, grass")  # doctest: +SKIP
    >>> result.ok, result.message, result.shares  # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from annofree.errors import UserError
from annofree.inference.settings import GIVEN_SOURCE

# Opened formats: common raster images only (Pillow would also hand EPS to Ghostscript, for instance).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
HOST, PORT = "127.0.0.1", 7860  # where serve() listens unless told otherwise


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 25_000_000
    max_classes: int = 50
    max_name_chars: int = 100

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_classes", "max_name_chars"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class AppResult:
    """What one request gives back; ``ok`` False with ``message`` saying why when it was refused or failed."""

    ok: bool
    message: str
    overlay: Image.Image | None = (
        None  # image blended with the label colours, at most ``display_side`` on its long side
    )
    groups: Image.Image | None = None  # image | stage 1 groups | stage 2 groups ... (GroupViT)
    shares: list[tuple[str, float, tuple[int, int, int]]] = field(default_factory=list)  # name, share, colour

    @property
    def legend_html(self) -> str:
        return legend_html(self.shares)


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 1024:.1f} KB"


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels" if pixels >= 1e6 else f"{pixels:,} pixels"


def working_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """``(height, width)`` the model computes at for an image of this size: the segmenters' own short-side size
    rule (``None`` or 0: the size itself), computed from the numbers alone, so that nothing is allocated."""
    if not short_side:
        return int(height), int(width)
    from annofree.inference.resize import rescaled_size

    return rescaled_size(int(height), int(width), int(short_side))


def read_upload(path: str | Path, limits: Limits, short_side: int | None = None) -> np.ndarray:
    """The uploaded file as ``uint8 [H, W, 3]``, or a ``UserError`` saying why it is refused.

    Checked in order: the file's size, that it is an image of an accepted format (from its header), its
    pixel count and the pixel count the model would compute on after resizing the shorter side to
    ``short_side`` (both from its header, before decoding); then the first frame is decoded.
    """
    from annofree.data.images import to_rgb

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise UserError("the uploaded file could not be read; upload it again") from None
    if size > limits.max_upload_bytes:
        raise UserError(
            f"the file is {_megabytes(size)}; files up to {_megabytes(limits.max_upload_bytes)} are accepted"
        )
    accepted = ", ".join(IMAGE_FORMATS)
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:  # reads the header only
            width, height = image.size
            check_pixels(height, width, short_side, limits)
            image.load()
            return to_rgb(image)
    except UnidentifiedImageError:
        raise UserError(f"this file is not an image (accepted formats: {accepted})") from None
    except Image.DecompressionBombError:
        raise UserError(f"the image has too many pixels (up to {_megapixels(limits.max_pixels)})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UserError(f"the image could not be decoded ({type(exc).__name__}: {exc})".splitlines()[0]) from None


def check_pixels(height: int, width: int, short_side: int | None, limits: Limits) -> None:
    """A ``UserError`` when the image, or what the model would compute on after the short-side resize, has more
    pixels than ``limits.max_pixels`` (a 20 x 1,000,000 strip is 20 Mpx, but 448 x 22,400,000 after the resize)."""
    if width * height > limits.max_pixels:
        raise UserError(
            f"the image is {width}x{height} = {_megapixels(width * height)}; images up to "
            f"{_megapixels(limits.max_pixels)} are accepted"
        )
    work_height, work_width = working_size(height, width, short_side)
    if work_width * work_height > limits.max_pixels:
        raise UserError(
            f"the image is {width}x{height}; with its shorter side resized to {short_side} the model would compute "
            f"on {work_width}x{work_height} = {_megapixels(work_width * work_height)}, above the "
            f"{_megapixels(limits.max_pixels)} accepted (a less elongated image fits)"
        )


def parse_class_text(text: str | None, limits: Limits) -> list[str]:
    """``"cat, dog, grass"`` -> names; a ``UserError`` for none, too many, too long, empty or repeated names.

    The names are counted before the text is split, so a huge list costs nothing.
    """
    from annofree.inference.zero_shot import BACKGROUND, check_class_names

    text = (text or "").strip()
    if not text.replace(",", "").strip():
        raise UserError("type the class names to look for, separated by commas (e.g. cat, dog, grass)")
    count = text.count(",") + 1
    if count > limits.max_classes:
        raise UserError(f"{count} class names given; at most {limits.max_classes} are accepted")
    if len(text) > limits.max_classes * (limits.max_name_chars + 2):
        raise UserError(f"the class list is too long ({len(text)} characters)")
    parts = [p for p in text.split(",") if p.strip()]  # "cat, dog," is two names
    long = next((p.strip() for p in parts if len(p.strip()) > limits.max_name_chars), None)
    if long is not None:
        raise UserError(f"class names are limited to {limits.max_name_chars} characters ({long[:20]!r}...)")
    names = check_class_names(parts)
    if any(name.lower() == BACKGROUND for name in names):
        raise UserError("'background' is implicit (set by the background threshold); leave it out")
    return names


def legend_html(shares: Sequence[tuple[str, float, tuple[int, int, int]]]) -> str:
    """A small HTML table: colour swatch, name and share of the pixels of each label (names escaped)."""
    if not shares:
        return ""
    rows = "".join(
        f'<tr class="annofree-row" data-name="{html.escape(name)}"><td><span class="annofree-swatch" '
        f'style="background: rgb{tuple(int(c) for c in color)}"></span></td><td>{html.escape(name)}</td>'
        f'<td class="annofree-share">{100 * share:.1f}%</td></tr>'
        for name, share, color in shares
    )
    return f'<table class="annofree-legend"><tr><th></th><th>label</th><th>pixels</th></tr>{rows}</table>'


def _display(image: np.ndarray, labels: np.ndarray, side: int, min_side: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """Image and label map as shown: shrunk (labels by nearest neighbour) so that the longer side is at most
    ``side``, or enlarged by an integer factor (nearest neighbour, pixels stay exact) up to ``min_side``."""
    height, width = labels.shape
    factor = side / max(height, width)
    if factor >= 1:
        grow = max(1, min(min_side, side) // max(height, width))
        if grow == 1:
            return image, labels
        return np.kron(image, np.ones((grow, grow, 1), np.uint8)), np.kron(labels, np.ones((grow, grow), labels.dtype))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    small_labels = np.asarray(Image.fromarray(labels.astype(np.int32)).resize(size, Image.Resampling.NEAREST))
    return small, small_labels.astype(np.int64)


class SegmentApp:
    """The app's work in plain Python: one call per request, never raising.

    Args:
        model: any model with a segmenter (:mod:`annofree.inference.segmenters`): a GroupViT (zero-shot, class
            names needed) or a DenseSiam (clusters).
        limits: what one request may ask (:class:`Limits`).
        short_side: the shorter side the model sees (0: keep). ``None``: for GroupViT the weights' stored
            settings, else the segmenter's default; 320 for DenseSiam.
        template: prompt templates instead of the ``prompts`` setting's (GroupViT).
        display_side: the pictures sent back are at most this many pixels on their longer side (shares are
            counted at the image's own size); small images are enlarged by an integer factor towards 320.
        settings_source: how the settings line (:meth:`notes`) names the options given here.
        **options: the segmenter's settings (:class:`annofree.inference.settings.ZeroShotSettings`: GroupViT reads
            ``bg_thresh``, ``bg_rule``, ``mode``, ``flip``..., DenseSiam ``short_side`` only), each given one over
            the weights' stored settings (``model.inference_settings``) over the defaults. The page's mode and
            threshold start there (``self.settings``).
    """

    def __init__(
        self,
        model: Any,
        *,
        limits: Limits | None = None,
        short_side: int | None = None,
        template: str | Sequence[str] | None = None,
        display_side: int = 1024,
        title: str = "",
        settings_source: str = GIVEN_SOURCE,
        **options: Any,
    ):
        from annofree.inference.segmenters import build_segmenter, segmenter_kind
        from annofree.inference.settings import resolve_settings

        self.model = model
        self.segmenter_kind = segmenter_kind(model)
        self.kind = self.segmenter_kind.name
        self.limits = limits or Limits()
        self.template = template
        self.display_side = int(display_side)
        self.title = title
        self._segmenters: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()  # one request at a time uses the model
        if short_side is not None:
            options["short_side"] = int(short_side) or None
        if not self.segmenter_kind.named_classes:  # one segmenter for every request: its labels are its own
            self.settings, self.sources = resolve_settings()  # unused: the page hides the zero-shot controls
            self._segmenters[()] = build_segmenter(model, source=settings_source, **options)
            self.short_side = self._segmenters[()].short_side
            return
        # Checked here, before serving, not at the first request.
        stored = getattr(model, "inference_settings", None)
        self.settings, self.sources = resolve_settings(stored, options, given_source=settings_source)
        self.short_side = self.settings.short_side

    def notes(self) -> list[str]:
        """What the page and the server's start say about the settings: the zero-shot settings the page starts
        from and where each came from, and a warning when the weights learned from synthetic scenes only (for
        clusters: their short side)."""
        from annofree.inference.settings import settings_notes

        if not self.segmenter_kind.named_classes:
            return self._segmenters[()].notes()
        return settings_notes(self.settings, self.sources, getattr(self.model, "inference_settings", None))

    def segment(
        self,
        image: str | Path | None,
        classes: str | None = "",
        mode: str | None = None,
        bg_thresh: float | None = None,
    ) -> AppResult:
        """Segment the image file ``image``; a refused or failed request is an ``AppResult`` with ``ok`` False."""
        started = time.perf_counter()
        try:
            if image is None or not str(image):
                raise UserError("upload an image or pick an example first")
            with self._lock:
                result = self._segment(image, classes, mode or self.settings.mode, bg_thresh)
        except UserError as exc:
            return AppResult(False, f"Refused: {exc}")
        except Exception as exc:  # out of memory, a bug: reported, and the server goes on
            traceback.print_exc(file=sys.stderr)
            return AppResult(False, f"Error: {type(exc).__name__}: {exc}".splitlines()[0][:400])
        result.message += f" ({time.perf_counter() - started:.2f} s)"
        return result

    def _segmenter(self, names: tuple[str, ...], mode: str, bg_thresh: float):
        """The segmenter for these class names, mode and threshold (the last 8 kept: their class embeddings)."""
        from annofree.inference.segmenters import build_segmenter

        key = (names, mode, bg_thresh) if names else ()
        if key not in self._segmenters:
            settings = replace(self.settings, mode=mode, bg_thresh=bg_thresh)
            self._segmenters[key] = build_segmenter(self.model, list(names), settings, template=self.template)
            while len(self._segmenters) > 8:
                self._segmenters.popitem(last=False)
        self._segmenters.move_to_end(key)
        return self._segmenters[key]

    def _segment(self, path: str | Path, classes: str | None, mode: str, bg_thresh: float | None) -> AppResult:
        from annofree.inference.settings import MODES, check_background
        from annofree.viz import grouping_stages, groups_panel, label_colors, overlay

        named = self.segmenter_kind.named_classes
        names: tuple[str, ...] = ()
        bg = self.settings.bg_thresh if bg_thresh is None else float(bg_thresh)
        if named:
            if mode not in MODES:
                raise UserError(f"unknown mode {mode!r} (whole or slide)")
            check_background(self.settings.bg_rule, bg)
            names = tuple(parse_class_text(classes, self.limits))
        image = read_upload(path, self.limits, self.short_side)
        result = self._segmenter(names, mode, bg).segment(image)
        small, labels = _display(image, result.label_map, self.display_side)
        colors = label_colors(result.class_names)
        shares = [(n, s, tuple(int(c) for c in colors[i])) for i, (n, s) in enumerate(result.fractions().items())]
        groups = None
        if self.segmenter_kind.grouping_stages:
            maps, counts = grouping_stages(self.model, image, self.short_side, size=labels.shape)
            groups = groups_panel(small, maps, counts)
        height, width = image.shape[:2]
        if named:
            found = ", ".join(f"{n} {100 * s:.1f}%" for n, s, _ in shares[1:] if s > 0) or "only background"
            how = "whole image" if mode == "whole" else "sliding window"
            message = f"{width}x{height} px, {how}, background threshold {bg:.2f}: {found}"
        else:
            unused = f"; class names are not used: {self.segmenter_kind.title}'s clusters have no names"
            note = unused if (classes or "").strip() else ""
            used = sum(1 for _, share, _ in shares if share > 0)
            message = f"{width}x{height} px: {used} of {len(shares)} clusters{note}"
        overlay_image = overlay(small, labels, result.class_names, legend=False)
        return AppResult(True, message, overlay=overlay_image, groups=groups, shares=shares)


# ----------------------------------------------------------------------------- example images


REAL_EXAMPLES = {  # scikit-image's bundled photos (public domain or CC0, see skimage.data) and class names
    "astronaut": "person, flag, wall",
    "chelsea": "cat, floor, wall",
    "coffee": "cup, saucer, spoon, table",
    "rocket": "rocket, sky, tree, building",
}
SHAPES = "circle, square, triangle, star, heart, cross, ring, crescent"


def write_examples(directory: str | Path, synthetic: int = 2, size: int = 224) -> list[tuple[Path, str]]:
    """Example images and class names for the page, written into ``directory``.

    Real photos from scikit-image's data when it is installed (copied at run time, nothing bundled here),
    then ``synthetic`` scenes of :mod:`annofree.data.synth` (the shapes the demo's GroupViT learns).
    """
    from annofree.data.synth import SceneConfig, render_scene, scene_rng

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    examples: list[tuple[Path, str]] = []
    try:
        import skimage.data
    except ImportError:
        skimage = None
    if skimage is not None:
        for name, classes in REAL_EXAMPLES.items():
            try:
                pixels = np.asarray(getattr(skimage.data, name)())
            except Exception:  # a photo missing from this scikit-image
                continue
            path = directory / f"{name}.jpg"
            Image.fromarray(pixels).convert("RGB").save(path, quality=92)
            examples.append((path, classes))
    for index in range(synthetic):
        scene = render_scene(scene_rng(0, "app", index), SceneConfig(size=size, min_objects=2, max_objects=3))
        path = directory / f"shapes_{index}.png"
        Image.fromarray(scene.image).save(path)
        examples.append((path, SHAPES))
    return examples


# ----------------------------------------------------------------------------- the Gradio page


CSS = """
.annofree-legend { border-collapse: collapse; font-size: 0.95em; }
.annofree-legend td, .annofree-legend th { padding: 2px 10px 2px 4px; text-align: left; border: none; }
.annofree-swatch { display: inline-block; width: 1.1em; height: 1.1em; border: 1px solid #666; vertical-align: middle; }
.annofree-share { text-align: right !important; font-variant-numeric: tabular-nums; }
"""


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry, no version check
    try:
        import gradio as gr
    except ImportError:
        raise UserError("the app needs gradio: pip install 'annofree[app]'") from None
    return gr


def _hand_over_unopened(image) -> None:
    """Make a ``gr.Image(type="filepath")`` hand the stored upload's path on without opening it (gradio would open
    it with Pillow first): :func:`read_upload` checks the file (size, format, pixel count from the header) before
    anything decodes it. Set on the instance: a subclass of a gradio component would make gradio write a
    ``.pyi`` stub next to this module."""
    original = image.preprocess

    def preprocess(payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return original(payload)

    image.preprocess = preprocess


def build_blocks(app: SegmentApp, examples: Sequence[tuple[str | Path, str]] = ()):
    """The Gradio page over ``app`` (not launched). Elements carry ids for tests and styling."""
    gr = _gradio()

    kind = app.segmenter_kind
    groupvit = kind.named_classes  # class names, mode and threshold on the page (GroupViT)
    limits = app.limits
    # Uploads and drawn results are kept an hour in gradio's cache, then deleted (a long-running server stays small).
    with gr.Blocks(title="annofree", analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(
            f"## annofree: {'zero-shot segmentation' if groupvit else 'unsupervised clusters'} ({kind.title})"
            + (f"\n`{app.title}`" if app.title else "")
        )
        gr.Markdown("\n\n".join(f"`{note}`" for note in app.notes()), elem_id="notes")  # code: no markup
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(
                    label="image", type="filepath", sources=["upload", "clipboard"], elem_id="image", height=320
                )
                _hand_over_unopened(image)
                classes = gr.Textbox(
                    label=f"class names, comma separated (at most {limits.max_classes})",
                    placeholder="cat, dog, grass",
                    elem_id="classes",
                    visible=groupvit,
                )
                mode = gr.Radio(
                    [("whole image", "whole"), ("sliding window", "slide")],
                    value=app.settings.mode,
                    label="inference",
                    elem_id="mode",
                    visible=groupvit,
                )
                rule = app.settings.bg_rule
                low = -1.0 if rule == "similarity" else 0.0  # a cosine, or an affinity
                bg = gr.Slider(low, 1.0, value=app.settings.bg_thresh, step=0.01, elem_id="bg", visible=groupvit,
                               label=f"background threshold ({rule})")  # fmt: skip
                button = gr.Button("Segment", variant="primary", elem_id="run")
                gr.Markdown(
                    f"Files up to {_megabytes(limits.max_upload_bytes)} and {_megapixels(limits.max_pixels)}."
                    + ("" if groupvit else f" {kind.title} needs no class names: it shows its clusters.")
                )
                if examples:
                    gr.Examples(
                        [[str(path), text] if groupvit else [str(path)] for path, text in examples],
                        inputs=[image, classes] if groupvit else [image],
                        label="examples",
                    )
            with gr.Column(scale=3):
                status = gr.Textbox(label="status", interactive=False, elem_id="status")
                with gr.Row():
                    overlay = gr.Image(label="segmentation", show_label=False, type="pil", format="png",
                                       interactive=False, elem_id="overlay", scale=4)  # fmt: skip
                    legend = gr.HTML(elem_id="legend", min_width=160, scale=1)
        with gr.Column(visible=kind.grouping_stages):
            gr.Markdown("#### Groups of each grouping stage (colours: groups; one pass over the whole image)")
            groups = gr.Image(label="groups of each grouping stage", show_label=False, type="pil", format="png",
                              interactive=False, elem_id="groups")  # fmt: skip

        def run(path, text, how, threshold):
            result = app.segment(path, text, how, threshold)
            return result.overlay, result.legend_html, result.groups, result.message

        button.click(run, [image, classes, mode, bg], [overlay, legend, groups, status], api_name="segment")
    return blocks


def serve(
    app: SegmentApp,
    host: str = HOST,
    port: int = PORT,
    examples: Sequence[tuple[str | Path, str]] = (),
    block: bool = True,
    quiet: bool = False,
):
    """Start the page on ``host:port``; with ``block`` False return the running ``Blocks`` (``.close()`` stops it)."""
    gr = _gradio()
    if host not in LOOPBACK:
        print(f"annofree: warning: listening on {host}: anyone who can reach this machine can use the app",
              file=sys.stderr)  # fmt: skip
    blocks = build_blocks(app, examples)
    blocks.queue(default_concurrency_limit=1, max_size=64)
    system = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts: the page works offline
    theme = gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])
    allowed = sorted({str(Path(path).parent) for path, _ in examples})
    try:
        blocks.launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            prevent_thread_lock=not block,
            show_error=True,
            quiet=quiet,
            max_file_size=app.limits.max_upload_bytes,
            allowed_paths=allowed,
            ssr_mode=False,
            theme=theme,
            css=CSS,
            footer_links=[],
        )
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc})") from None
    return blocks


__all__ = [
    "AppResult",
    "Limits",
    "SegmentApp",
    "build_blocks",
    "check_pixels",
    "legend_html",
    "parse_class_text",
    "read_upload",
    "serve",
    "working_size",
    "write_examples",
]
