"""Something done every few seconds on a thread of its own, for a `with` block."""

from __future__ import annotations

import threading
from typing import Self


class Repeated:
    """Runs `_tick` every `interval` seconds from entering the block until leaving it, then `_close`."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._tick()

    def _tick(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass
