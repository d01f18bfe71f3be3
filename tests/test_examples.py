"""The example images the page offers are in the bundled model's validation split: never trained on."""
from __future__ import annotations

import csv
import hashlib

import pytest

from conftest import EXAMPLES, SHARED_DATA
from training.data import DataSpec, load_splits

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundled_manifest(path):
    """The manifest the bundled model was trained beside: the shared one before `ffhq_photos` was added (2026-12-07),
    paths made absolute. Adding rows changes the two-way split of the others; the three-way split does not."""
    with (SHARED_DATA / "manifest.csv").open() as f, path.open("w", newline="") as out:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
        writer.writeheader()
        for row in reader:
            if row["source"] != "ffhq_photos":
                writer.writerow({**row, "file": str(SHARED_DATA / row["file"])})
    return path


def test_examples_come_from_the_validation_split(tmp_path):
    spec = DataSpec(str(bundled_manifest(tmp_path / "manifest.csv")), image_column="file", group_column="group",
                    source_column="source")
    train, validation = load_splits(spec, check=False)
    by_digest = {}
    with (SHARED_DATA / "manifest.csv").open() as f:
        for row in csv.DictReader(f):
            if row["source"] in ("pixabay_portraits", "sdfd_diffusion"):
                by_digest[digest(SHARED_DATA / row["file"])] = row["file"]
    held = {item["path"].split("/data/", 1)[1] for item in validation["image"]}
    examples = sorted(EXAMPLES.glob("*.jpg"))
    assert len(examples) == 4
    for example in examples:
        shared = by_digest.get(digest(example))
        assert shared, f"{example.name} is not a shared image"
        assert shared in held, f"{example.name} ({shared}) is in the training split"
        assert shared in (EXAMPLES / "SOURCES.md").read_text()
