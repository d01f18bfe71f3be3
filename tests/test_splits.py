"""The three-way split (train / validation / test) and the threshold rule's stability check."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA
from training import threshold_stability
from training.data import DataError, DataSpec, load_raw, load_splits, split_three, load_test, with_targets

needs_shared = pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")


def manifest(path, sources: dict[str, tuple[int, int]], group_size: int = 1):
    """A CSV of the shared photos: `sources` maps a source to (reals, fakes); each `group_size` photos share a group."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "source", "group"])
        for source, counts in sources.items():
            for label, count in zip(("real", "fake"), counts):
                files = sorted((SHARED_DATA / source / label).glob("*.jpg"))[:count]
                for index, file in enumerate(files):
                    writer.writerow([str(file), label, source, f"{source}-{label}-{index // group_size}"])
    return path


def spec(path, **kwargs) -> DataSpec:
    return DataSpec(str(path), image_column="file", source_column="source", group_column="group", **kwargs)


def files(dataset) -> set[str]:
    return {item["path"] for item in dataset["image"]}


@needs_shared
def test_three_ways_by_source_and_group_and_adding_a_source_leaves_the_others_as_they_were(tmp_path):
    base = {"lfw_faceswap": (40, 40), "utkface_adults": (60, 0)}
    first = spec(manifest(tmp_path / "a.csv", base, group_size=2), val_fraction=0.1, test_fraction=0.1)
    train, val, test = split_three(with_targets(load_raw(first)["train"], first), first)
    assert len(train) + len(val) + len(test) == 140 and not (files(train) & files(val) or files(train) & files(test)
                                                              or files(val) & files(test))
    assert len(val) == len(test) == 14  # a tenth of each source and class
    for part in (train, val, test):  # a group lies on one side only
        assert not {g for g in part["group"]} & {g for other in (train, val, test) if other is not part for g in other["group"]}
    grown = spec(manifest(tmp_path / "b.csv", {**base, "ffhq_photos": (50, 0)}, group_size=2), val_fraction=0.1,
                 test_fraction=0.1)
    train2, val2, test2 = split_three(with_targets(load_raw(grown)["train"], grown), grown)
    old = lambda d: {p for p in files(d) if "/ffhq_photos/" not in p}
    assert (old(train2), old(val2), old(test2)) == (files(train), files(val), files(test))
    assert load_splits(grown, check=False)[1]["image"] == val2["image"] and load_test(grown)["image"] == test2["image"]


@needs_shared
def test_the_two_way_split_stays_the_default_and_a_test_split_needs_a_test_fraction(tmp_path):
    path = manifest(tmp_path / "a.csv", {"lfw_faceswap": (20, 20)})
    assert len(load_splits(spec(path), check=False)[1]) == 8  # 20%, as every run before the three-way split
    with pytest.raises(DataError, match="--test-fraction"):
        load_test(spec(path))
    with pytest.raises(DataError, match="whole multiples"):
        split_three(with_targets(load_raw(spec(path))["train"], spec(path)), spec(path, val_fraction=0.15, test_fraction=0.1))


def test_the_stability_check_fits_on_one_half_of_the_groups_and_measures_on_the_other(tmp_path):
    """A small source whose reals score high holds the old rule's threshold up, not the new rule's; measured on the
    other half, each rule's rates are what its fitted half promised, within the luck of the draw."""
    rng = np.random.default_rng(0)
    rows = []
    for source, n, low, high in (("big", 400, 0.0, 0.6), ("other", 400, 0.0, 0.6), ("small", 30, 0.5, 0.9)):
        rows += [(0, float(p), source, f"{source}{i // 4}") for i, p in enumerate(rng.uniform(low, high, n))]
    rows += [(1, float(p), "fakes", f"f{i}") for i, p in enumerate(rng.uniform(0.3, 1.0, 400))]
    path = tmp_path / "predictions.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "is_fake", "p_fake", "source", "group"])
        writer.writerows([f"x{i}.jpg", *row] for i, row in enumerate(rows))
    summary = threshold_stability.main([str(path), "--repeats", "40", "--output", str(tmp_path / "s.md")])
    before, after = summary["every source alike (before)"], summary["docs/thresholds.md"]
    assert after["measured"]["fakes_caught"][1] > before["measured"]["fakes_caught"][1]  # the small source held it up
    assert after["measured"]["mean_over_sources"][1] <= 0.07 and after["measured"]["all_reals"][1] <= 0.07
    assert before["measured"]["mean_over_sources"][1] <= 0.07
    assert "| docs/thresholds.md | other half |" in (tmp_path / "s.md").read_text()


@needs_shared
def test_the_listed_split_is_the_split_training_used_and_its_paths_match_evaluates(tmp_path):
    from training import splits
    path = manifest(tmp_path / "m.csv", {"lfw_faceswap": (30, 30)}, group_size=3)
    options = ["--dataset", str(path), "--image-column", "file", "--group-column", "group", "--source-column", "source",
               "--val-fraction", "0.1", "--test-fraction", "0.1"]
    rows = splits.main([*options, "--split", "test", "--output", str(tmp_path / "test.csv")])
    expected = load_test(spec(path, val_fraction=0.1, test_fraction=0.1))
    assert [row["file"] for row in rows] == [str(Path(item["path"]).resolve()) for item in expected["image"]]
    assert {row["label"] for row in rows} == {"real", "fake"} and {row["source"] for row in rows} == {"lfw_faceswap"}
    with (tmp_path / "test.csv").open(newline="") as f:
        assert list(csv.DictReader(f)) == rows
    train = splits.main([*options, "--split", "train", "--output", str(tmp_path / "train.csv")])
    assert not {row["file"] for row in train} & {row["file"] for row in rows}
    assert {row["group"] for row in train}.isdisjoint(row["group"] for row in rows)
