"""Dataset labels onto the detector's two classes: what training and collection scoring both read."""
from __future__ import annotations

from .errors import DetectorError
from .model import LABEL_NAMES


class DataError(DetectorError):
    """A dataset problem the user must fix (unmapped label, empty class, unreadable file...)."""


def parse_label_map(text: str | None) -> dict[str, str] | None:
    """'Real=real,Fake=fake' → {'Real': 'real', 'Fake': 'fake'}."""
    if not text:
        return None
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise DataError(f"--label-map must look like 'Real=real,Fake=fake', got {text!r}")
    mapping = {key.strip(): value.strip().lower() for key, value in pairs}
    bad = sorted(set(mapping.values()) - set(LABEL_NAMES))
    if bad:
        raise DataError(f"--label-map targets must be {list(LABEL_NAMES)}, got {bad}")
    return mapping


def resolve_label_map(names: list[str], label_map: dict[str, str] | None, column: str) -> dict[str, int]:
    """Dataset label → target index. Names 'real'/'fake' (any case) map themselves; others need --label-map."""
    mapping = label_map or {name: name.lower() for name in names if name.lower() in LABEL_NAMES}
    unmapped = [name for name in names if name not in mapping]
    if unmapped:
        raise DataError(
            f"Column {column!r} has labels {unmapped} that are not mapped onto {list(LABEL_NAMES)}. "
            f"Pass e.g. --label-map '{unmapped[0]}=fake' (all labels: {names})."
        )
    return {name: LABEL_NAMES.index(mapping[name]) for name in names}
