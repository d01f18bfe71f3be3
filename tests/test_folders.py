"""Model folders are replaced atomically: a crash while best/ or a published folder is replaced never leaves none."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TEST_ARCHITECTURE, TEST_IMG_SIZE
from detector import Detector
from detector import model as model_module
from detector.model import create_model, replace_folder, restore_folder
from training.train import save_model_folder


def folder_with(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "file.txt").write_text(text)
    return path


def failing_rename(monkeypatch):
    """Every Path.rename raises, as a crash (or a full disk) would stop the move."""
    def rename(self, target):
        raise OSError("simulated crash")

    monkeypatch.setattr(Path, "rename", rename)


def test_exchange_never_leaves_the_target_missing(tmp_path, monkeypatch):
    target = folder_with(tmp_path / "best", "old")
    staging = folder_with(tmp_path / ".best-staging", "new")
    failing_rename(monkeypatch)  # the swap does not rename: it exchanges in one system call
    replace_folder(staging, target)
    assert (target / "file.txt").read_text() == "new" and not staging.exists()


def test_fallback_crash_is_undone_on_the_next_load(tmp_path, monkeypatch):
    """Without an atomic exchange the old folder is moved aside first; a crash then is repaired by restore_folder."""
    target = folder_with(tmp_path / "best", "old")
    staging = folder_with(tmp_path / ".best-staging", "new")
    monkeypatch.setattr(model_module, "_exchange", lambda a, b: False)
    calls = []
    real_rename = Path.rename

    def rename(self, other):
        calls.append(self.name)
        if len(calls) == 2:  # target moved aside, then the crash before staging takes its place
            raise OSError("simulated crash")
        return real_rename(self, other)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError):
        replace_folder(staging, target)
    monkeypatch.setattr(Path, "rename", real_rename)
    assert not target.exists()
    restore_folder(target)
    assert (target / "file.txt").read_text() == "old"


def test_best_checkpoint_survives_a_crash_while_it_is_replaced(tmp_path, monkeypatch):
    """training.train's best/: the old best model stays loadable when writing the new one fails at the last step."""
    torch.manual_seed(0)
    first = create_model(TEST_ARCHITECTURE, img_size=TEST_IMG_SIZE)
    save_model_folder(first, tmp_path / "best", {"epoch": 1})
    second = create_model(TEST_ARCHITECTURE, img_size=TEST_IMG_SIZE)
    failing_rename(monkeypatch)
    save_model_folder(second, tmp_path / "best", {"epoch": 2})
    monkeypatch.undo()
    loaded = Detector.from_pretrained(tmp_path / "best", precision="fp32")
    assert loaded.labels == ["real", "fake"]
    assert '"epoch": 2' in (tmp_path / "best" / "training.json").read_text()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".best")]  # no staging left behind


def test_every_model_folder_is_readable_by_all(tmp_path):
    """best/, averaged and published folders all go through staged_folder: the folder put in place is 0755 and its
    files 0644, though mkdtemp and safetensors create owner-only modes (only publish used to open them up)."""
    torch.manual_seed(0)
    save_model_folder(create_model(TEST_ARCHITECTURE, img_size=TEST_IMG_SIZE), tmp_path / "best", {"epoch": 1})
    best = tmp_path / "best"
    assert best.stat().st_mode & 0o777 == 0o755
    modes = {path.name: path.stat().st_mode & 0o777 for path in best.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes
    assert "model.safetensors" in modes
