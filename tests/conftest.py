"""Shared fixtures: a real timm model folder (random weights, small input), real face images."""
from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest
from timm.models import save_for_hf

from detector.model import LABEL_NAMES, create_model

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHARED_DATA = ROOT.parent / "shared" / "data"
TEST_IMG_SIZE = 64  # small input keeps the real models fast
ARCHITECTURES = ("mobilenetv2_100", "resnext50_32x4d")  # the bundled model's and the original design's
TEST_ARCHITECTURE = "resnext50_32x4d"  # the shared test model (tests that cover both parametrize over ARCHITECTURES)


def photos(source: str, label: str, count: int = 6) -> list[Path]:
    """The first `count` photos of one source and class of the shared data, by file name."""
    return sorted((SHARED_DATA / source / label).glob("*.jpg"))[:count]


def small_manifest(path: Path, counts: dict[tuple[str, str], int]) -> Path:
    """A CSV in the shared manifest's shape (file, label, source) listing `photos(source, label, count)` for each
    (source, label): count, by absolute path."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "source"])
        for (source, label), count in counts.items():
            for photo in photos(source, label, count):
                writer.writerow([str(photo), label, source])
    return path


def write_model_folder(folder: Path, img_size: int = TEST_IMG_SIZE, seed: int = 0,
                       architecture: str = TEST_ARCHITECTURE) -> Path:
    """A Hub-layout folder (config.json + model.safetensors) holding a randomly initialised detector."""
    import torch

    torch.manual_seed(seed)
    model = create_model(architecture, img_size=img_size)
    save_for_hf(model, folder, model_config={"label_names": list(LABEL_NAMES)}, safe_serialization=True,
                data_config={"input_size": (3, img_size, img_size)})
    (folder / "README.md").write_text("---\nlibrary_name: timm\n---\n# Test model\n")
    return folder


@contextlib.contextmanager
def serve(detector):
    """The real app, launched on localhost as `python app.py` launches it; yields its URL."""
    import app as app_module

    demo = app_module.build_demo(detector)
    _, url, _ = app_module.launch(demo, prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return write_model_folder(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def detector(model_dir):
    from detector import Detector

    return Detector.from_pretrained(model_dir, precision="fp32")  # exact math; bf16 is checked against it


@pytest.fixture(scope="session")
def face_paths() -> list[Path]:
    """Real face photos shipped with the repo (two real, two generated)."""
    return sorted(EXAMPLES.glob("*.jpg"))
