"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (``kill``, a batch scheduler, torchrun).

The first signal only asks: the loop finishes the step it is in, saves a checkpoint at that step boundary
and raises :class:`Interrupted` (exit code 128 + the signal: 130 for SIGINT, 143 for SIGTERM). A second
signal stops at once. Signals within :data:`SAME_REQUEST_S` of the first count as the same request: Ctrl-C
under torchrun reaches a worker twice, from the terminal and from torchrun itself.

::

    with StopRequests(announce=True) as stop:
        for step ...:
            ...
            signum = stop.agreed()       # collective under torchrun: every rank stops at the same step
            if signum: save, then raise Interrupted(signum, "...")
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from annofree.engine import distributed

SAME_REQUEST_S = 1.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped on a signal; ``exit_code`` is what the process should exit with (128 + the signal)."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
        self.message = message

    def __str__(self) -> str:
        return self.message or f"interrupted by {signal.Signals(self.signum).name}"


class StopRequests:
    """Catches SIGINT and SIGTERM while in its ``with`` block (in the main thread; elsewhere it does nothing)."""

    def __init__(self, announce: bool = True):
        self.announce = announce
        self.signum: int | None = None
        self._first_at = 0.0
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:  # a forked data-loading worker: its parent decides
            return
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first_at = signum, now
            if self.announce:
                name = signal.Signals(signum).name
                print(
                    f"\n{name}: stopping after this step, saving a checkpoint first (again to stop at once)",
                    file=sys.stderr,
                    flush=True,
                )
        elif now - self._first_at >= SAME_REQUEST_S:
            self.__exit__()
            raise Interrupted(signum)

    def agreed(self) -> int | None:
        """The signal to stop on, the same on every rank (collective when distributed): SIGTERM wins."""
        if not distributed.world_size() > 1:
            return self.signum
        votes = distributed.reduce_sum(
            {"SIGINT": float(self.signum == signal.SIGINT), "SIGTERM": float(self.signum == signal.SIGTERM)}
        )
        if votes["SIGTERM"]:
            return signal.SIGTERM
        return signal.SIGINT if votes["SIGINT"] else None
