"""One result row per input, the stable JSON shape shared by the CLI and the API.

Keys `file`, `label`, `probabilities`, `error` are a promise to scripts: add fields, never rename.
"""
from __future__ import annotations

from .detector import Analysis


def result_row(file: str, analysis: Analysis | None, error: str | None = None) -> dict:
    """{'file', 'label', 'probabilities', 'error', 'explained_class'}: None where the input failed."""
    return {
        "file": file,
        "label": analysis.label if analysis else None,
        "probabilities": dict(analysis.probabilities) if analysis else None,
        "error": error,
        "explained_class": analysis.explained if analysis else None,
    }
