"""The gate's one logger, and saying a thing once.

Every part of the gate logs as ``harvester.gate`` (users filter on that name), and a condition
that holds for a whole run (headers stripped by a proxy, a Reset off the grid, a skewed clock)
is worth one line, not one per reply.
"""

from __future__ import annotations

import logging

log = logging.getLogger("harvester.gate")


class OnceLog:
    """Logs each key's message the first time only."""

    __slots__ = ("_said",)

    def __init__(self) -> None:
        self._said: set[str] = set()

    def __call__(self, key: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        if key not in self._said:
            self._said.add(key)
            log.log(level, message, *args)
