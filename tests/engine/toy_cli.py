"""``python toy_cli.py train toy ...``: the ``annofree`` command with the engine tests' toy method registered.

For the tests that run training in a subprocess (signals, locks); not a test itself.
"""

from __future__ import annotations

import sys

import toy_method  # noqa: F401  (registers the toy method; this script's folder is on sys.path)

from annofree.cli import main

if __name__ == "__main__":
    sys.exit(main())
