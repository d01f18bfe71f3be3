"""The one error type a user can cause; its message says what to do."""
from __future__ import annotations

import sys
from typing import Callable


class DetectorError(ValueError):
    """Raised for input or model problems a user can fix; the message is safe to show as is."""


def run_cli(main: Callable[[], object]) -> None:
    """Run a command's `main`. A `DetectorError` ends it with its message on stderr and exit status 2, never a
    traceback: the message already says what to do."""
    try:
        main()
    except DetectorError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
