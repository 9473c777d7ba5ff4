"""Every job's logging: stderr (tracebacks, progress bars) and log records go to the rule's
log file. Standard library only, so any rule's environment can import it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup_logging(log_path: str | Path) -> None:
    """Route stderr (tracebacks, progress bars) and logging into the rule's log file."""
    sys.stderr = open(log_path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True
    )
