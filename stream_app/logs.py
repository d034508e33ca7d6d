"""Structured logs: one JSON object per line, one line per notable event."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

logger = logging.getLogger("stream_app")


def log(event: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, json.dumps({"ts": round(time.time(), 3), "event": event, **fields},
                                     default=str, ensure_ascii=False))


def setup(level: str) -> None:
    """Plain message format: the message already is the JSON line."""
    lvl = {"warn": "WARNING", "warning": "WARNING"}.get(level.lower(), level.upper())
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(lvl)
    logger.propagate = False
