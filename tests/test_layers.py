"""Data flows one way: serving (detector/, app.py) never imports training/, which may import serving."""
from __future__ import annotations

import ast

import pytest

from conftest import ROOT

SERVING = sorted((ROOT / "detector").glob("*.py")) + [ROOT / "app.py"]


def imported_modules(path) -> set[str]:
    """Every module a file imports, at its top level or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", SERVING, ids=[path.name for path in SERVING])
def test_serving_never_imports_training(path):
    upward = sorted(name for name in imported_modules(path) if name == "training" or name.startswith("training."))
    assert not upward, f"{path.relative_to(ROOT)} imports {upward}: move what both need down into detector/"


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from training.data import parse_label_map\n    import training.metrics as m\n")
    assert {"training.data", "training.metrics"} <= imported_modules(module)
