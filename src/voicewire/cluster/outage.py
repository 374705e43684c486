"""One log line when Redis goes away and one when it is back, however many calls fail between.

Every service retries Redis on its own schedule (heartbeats each second, flow writes, a relay's
lookups); logging each failure would bury the one line an operator needs.
"""

from __future__ import annotations

import logging


class OutageLog:
    def __init__(self, log: logging.Logger, lost: str, back: str) -> None:
        self._log = log
        self._lost = lost
        self._back = back
        self.reachable = True

    def failed(self, error: str) -> None:
        if self.reachable:
            self._log.warning(self._lost, extra={"error": error})
        self.reachable = False

    def succeeded(self) -> None:
        if not self.reachable:
            self._log.info(self._back)
        self.reachable = True
