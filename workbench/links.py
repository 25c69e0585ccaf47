"""Links to the MLflow and Prefect UIs, shown only where they lead somewhere: an address the operator
configured, or the default address when a server answers there. Otherwise the page says how to start one."""

from __future__ import annotations

import threading
import time

import httpx

PROBE_SECONDS = 0.5  # a local server answers in milliseconds; a refused port fails at once
RECHECK_SECONDS = 30  # how long an answer (or its absence) is trusted


class ServiceLink:
    def __init__(self, url: str, configured: bool, start_hint: str):
        self.url, self.configured, self.start_hint = url.rstrip("/"), configured, start_hint
        self._checked: tuple[float, bool] | None = None
        self._lock = threading.Lock()

    def address(self) -> str | None:
        """The UI's address when configured or answering now (re-checked every RECHECK_SECONDS), else None."""
        if self.configured:
            return self.url
        with self._lock:
            if self._checked is None or time.monotonic() - self._checked[0] > RECHECK_SECONDS:
                self._checked = (time.monotonic(), self._answers())
            return self.url if self._checked[1] else None

    def _answers(self) -> bool:
        try:
            httpx.get(self.url, timeout=PROBE_SECONDS)
        except httpx.HTTPError:
            return False
        return True
