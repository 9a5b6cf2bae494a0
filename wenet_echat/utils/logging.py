"""Console logging in one format for every entry point."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def setup_logging(level: str | int = "INFO") -> None:
    logging.basicConfig(level=level, format=FORMAT, force=True)
