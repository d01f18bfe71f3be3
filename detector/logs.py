"""How the command-line entry points (app, CLI tools, training) log: one format, INFO and above, to stderr."""
from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """Called once by each entry point's main(); a library user configures logging themselves."""
    logging.basicConfig(format=FORMAT, level=logging.INFO)
