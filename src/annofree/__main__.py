"""``python -m annofree ARGS``: the same command line as ``annofree ARGS`` (:func:`annofree.cli.main`)."""

import sys

from annofree.cli import main

sys.exit(main())
