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


def test_examples_come_from_the_validation_split():
    spec = DataSpec(str(SHARED_DATA / "manifest.csv"), image_column="file", group_column="group", source_column="source")
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
