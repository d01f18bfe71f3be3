"""The repository deploys as a Hugging Face Space: front matter the Space reads, large files through Git LFS."""
from __future__ import annotations

import fnmatch
import subprocess

import yaml

from conftest import ROOT
from detector.model import is_hub_id

# The fields of a Space's README front matter (Spaces configuration reference) plus the repo card fields.
SPACE_FIELDS = {"title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "python_version", "app_file", "app_port",
                "pinned", "license", "license_name", "license_link", "short_description", "models", "datasets", "tags",
                "suggested_hardware", "suggested_storage", "fullWidth", "header", "thumbnail", "preload_from_hub",
                "startup_duration_timeout", "disable_embedding", "custom_headers"}
LFS_LIMIT = 10 * 1024 * 1024


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_front_matter_holds_only_fields_spaces_read_and_the_ones_they_need():
    meta = front_matter()
    assert set(meta) <= SPACE_FIELDS, set(meta) - SPACE_FIELDS
    assert meta["sdk"] == "gradio" and (ROOT / meta["app_file"]).is_file()
    import gradio

    assert meta["sdk_version"] == gradio.__version__  # the Space installs the version the tests ran
    assert len(meta["short_description"]) <= 60
    assert meta["license"] == "other" and meta["license_name"] and (ROOT / meta["license_link"]).is_file()
    assert meta["suggested_hardware"] in {"cpu-basic", "cpu-upgrade", "t4-small", "t4-medium", "l4x1", "a10g-small"}
    assert isinstance(meta["tags"], list) and "deepfake-detection" in meta["tags"]
    # `models:` links the Space to the Hub models it pulls: only Hub ids, never the bundled folder's path
    assert all(is_hub_id(name) and "/" in name and not name.startswith("hf-hub:") for name in meta.get("models", []))
    assert "`models: [owner/name]`" in (ROOT / "README.md").read_text()  # how to fill it when DETECTOR_MODEL names one


def lfs_patterns() -> list[str]:
    patterns = []
    for line in (ROOT / ".gitattributes").read_text().splitlines():
        parts = line.split()
        if parts and not line.startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def test_every_file_over_10_mb_is_covered_by_an_lfs_rule():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    large = [name for name in tracked if (ROOT / name).is_file() and (ROOT / name).stat().st_size > LFS_LIMIT]
    patterns = lfs_patterns()
    # the bundled weights (4.5 MB as fp16 MobileNetV2, 46 MB as the earlier ResNeXt-50) go through LFS whatever their size
    assert any(fnmatch.fnmatch("model.safetensors", pattern) for pattern in patterns)
    uncovered = [name for name in large if not any(fnmatch.fnmatch(name.rsplit("/", 1)[-1], p) for p in patterns)]
    assert not uncovered, f"files over 10 MB without a Git LFS rule in .gitattributes: {uncovered}"
