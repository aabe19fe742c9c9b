"""``annofree app --weights W [--host 127.0.0.1 --port 7860]``: the local web page (see :mod:`annofree.app`).

GroupViT weights: upload or pick an image, type class names, choose whole-image or sliding-window inference and
the background threshold; the page shows the overlay with its legend, each class's share of the pixels and the
groups of each grouping stage. DenseSiam weights: the cluster map. It listens on loopback unless --host says
otherwise, and refuses requests beyond the limits below with a message.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile

from annofree.cli.common import add_inference_options


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "app",
        help="a local web page: segment images in the browser with your weights (Gradio, offline)",
        description=__doc__.split("\n\n")[1],
    )
    from annofree.app import HOST, PORT, Limits

    limits = Limits()  # the defaults of the limits, written there once
    add_inference_options(parser)
    parser.add_argument("--host", default=HOST, help="address to listen on (default %(default)s: this machine)")
    parser.add_argument("--port", type=int, default=PORT, help="port (default %(default)s)")
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=limits.max_upload_bytes / 2**20,
        help="largest accepted file, in MB (default %(default)s)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=limits.max_pixels,
        help="largest accepted image, in pixels, read from the header before decoding; the pixels computed on after "
        "the short-side resize count too (default %(default)s)",
    )
    parser.add_argument(
        "--max-classes",
        type=int,
        default=limits.max_classes,
        help="most class names in one request (default %(default)s)",
    )
    parser.add_argument("--no-examples", action="store_true", help="no example images on the page")
    return parser


def run(args: argparse.Namespace) -> int:
    from annofree.app import Limits, SegmentApp, serve, write_examples
    from annofree.cli.common import COMMAND_LINE, load_model, resolve_device, segmenter_options
    from annofree.errors import UserError

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must lie in 1..65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise UserError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    limits = Limits(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels, max_classes=args.max_classes
    )
    model = load_model(args.weights, resolve_device(args.device))
    options = segmenter_options(args)  # checked; --short-side goes to the app as given (0: keep), for every kind
    options.pop("short_side", None)
    app = SegmentApp(
        model,
        limits=limits,
        short_side=args.short_side,
        title=str(args.weights),
        settings_source=COMMAND_LINE,
        **options,
    )
    for line in app.notes():
        print(line, file=sys.stderr)
    examples_dir = tempfile.mkdtemp(prefix="annofree-app-")
    # A service manager stops the server with SIGTERM: exit through the finally below, as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        examples = [] if args.no_examples else write_examples(examples_dir)
        print(f"annofree app: {app.kind} weights {args.weights}; open http://{args.host}:{args.port} (Ctrl-C stops)")
        serve(app, host=args.host, port=args.port, examples=examples, block=True)
    finally:
        shutil.rmtree(examples_dir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    return 0
