"""Small helpers with no better home."""

from __future__ import annotations

import logging


def configure_logging(debug: bool) -> None:
    """One format for the app's loggers; DEBUG adds per-chunk timings."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger().setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("numba", "matplotlib", "urllib3", "httpx", "httpcore", "multipart", "python_multipart"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
