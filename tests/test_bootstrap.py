"""training.bootstrap: the paired bootstrap of fakes caught at a refitted threshold, on predictions files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA
from training import bootstrap, evaluate


def predictions(path: Path, scores: dict[str, float], labels: dict[str, tuple[int, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "is_fake", "p_fake", "source"])
        for name, p in scores.items():
            writer.writerow([name, labels[name][0], f"{p:.6f}", labels[name][1]])
    return path


@pytest.fixture
def images() -> tuple[dict[str, tuple[int, str]], dict[str, float]]:
    """Three real sources (one small and hard, as FFHQ is here) and two fake ones, with overlapping scores."""
    rng = np.random.default_rng(0)
    labels, scores = {}, {}
    for source, is_fake, n, centre in (("easy_reals", 0, 300, 0.3), ("hard_reals", 0, 20, 0.6), ("mixed", 0, 150, 0.35),
                                       ("mixed", 1, 150, 0.6), ("gan", 1, 200, 0.65)):
        for i in range(n):
            name = f"{source}/{is_fake}/{i}.jpg"
            labels[name] = (is_fake, source)
            scores[name] = float(np.clip(rng.normal(centre, 0.15), 0, 1))
    return labels, scores


def test_the_stored_point_is_the_share_evaluate_calibrate_reports(tmp_path, images):
    labels, scores = images
    path = predictions(tmp_path / "a.csv", scores, labels)
    result = bootstrap.main([str(path), str(path), "--per-source", "--replicates", "50"])
    files = sorted(scores)
    fitted = evaluate.calibrate({"is_fake": [labels[f][0] for f in files], "p_fake": [scores[f] for f in files],
                                 "sources": [labels[f][1] for f in files]}, 0.05, per_source=True)
    assert result["fakes_caught"]["first"]["stored_images"] == pytest.approx(fitted["fakes_caught"], abs=1e-6)
    # the same model twice: every draw gives both the same share
    assert result["difference"]["interval_95"] == [0.0, 0.0] and result["difference"]["share_of_draws_second_at_least_first"] == 1


def test_a_better_model_is_ahead_in_almost_every_draw_and_the_interval_is_not_a_point(tmp_path, images):
    labels, scores = images
    better = {name: min(1.0, p + 0.15) if labels[name][0] else p for name, p in scores.items()}
    result = bootstrap.main([str(predictions(tmp_path / "a.csv", scores, labels)),
                             str(predictions(tmp_path / "b.csv", better, labels)),
                             "--names", "old", "new", "--per-source", "--replicates", "200", "--output", str(tmp_path / "r.json")])
    low, high = result["fakes_caught"]["old"]["interval_95"]
    assert low < result["fakes_caught"]["old"]["stored_images"] < high
    assert result["difference"]["stored_images"] > 0.1 and result["difference"]["interval_95"][0] > 0
    assert result["difference"]["share_of_draws_second_at_least_first"] > 0.95
    assert (tmp_path / "r.json").is_file()


def test_files_of_different_images_are_refused_by_name(tmp_path, images):
    labels, scores = images
    fewer = dict(list(scores.items())[1:])
    with pytest.raises(SystemExit, match="score different images"):
        bootstrap.main([str(predictions(tmp_path / "a.csv", scores, labels)),
                        str(predictions(tmp_path / "b.csv", fewer, labels))])
    (tmp_path / "c.csv").write_text("file,p_fake\nx.jpg,0.5\n")
    with pytest.raises(SystemExit, match="no column is_fake, source"):
        bootstrap.main([str(tmp_path / "c.csv"), str(tmp_path / "c.csv")])


def grouped_images(groups: int, per_group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """One source, real and fake groups, every image of a group with its group's score (a sitter's photos alike)."""
    rng = np.random.default_rng(1)
    is_fake, p_fake, names = [], [], []
    for g in range(groups):
        fake, score = g % 2 == 1, float(np.clip(rng.normal(0.6 if g % 2 else 0.35, 0.15), 0, 1))
        is_fake += [fake] * per_group
        p_fake += [score] * per_group
        names += [f"person{g}"] * per_group
    return np.array(is_fake), np.array(p_fake), np.array(["press"] * len(names)), names


def test_drawing_whole_groups_widens_the_interval_of_grouped_photos():
    """Ten photos of a group that score alike are one piece of evidence, not ten: about √10 times the width."""
    is_fake, p_fake, sources, groups = grouped_images(groups=100, per_group=10)
    by_image = bootstrap.paired_bootstrap(is_fake, [p_fake], sources, 0.2, True, 300, 0)[:, 0]
    by_group = bootstrap.paired_bootstrap(is_fake, [p_fake], sources, 0.2, True, 300, 0, groups)[:, 0]
    width = lambda draws: np.subtract(*np.percentile(draws, [97.5, 2.5]))
    assert width(by_group) > 2 * width(by_image)
    # a draw takes whole groups: every group appears 0 or 10 times over
    draw = bootstrap.GroupDraw(is_fake, sources, groups)(np.random.default_rng(0))
    counts = np.unique(np.array(groups)[draw], return_counts=True)[1]
    assert len(draw) == len(groups) and set(counts % 10) == {0}


def test_an_image_without_a_group_is_its_own_group():
    assert list(bootstrap.resampling_units(["a", "", None, "a", "b", ""])) == [0, 2, 3, 0, 1, 4]
    is_fake, p_fake, sources, _ = grouped_images(groups=40, per_group=5)
    ungrouped = bootstrap.paired_bootstrap(is_fake, [p_fake], sources, 0.05, False, 100, 3, [""] * len(is_fake))
    image_by_image = bootstrap.paired_bootstrap(is_fake, [p_fake], sources, 0.05, False, 100, 3)
    np.testing.assert_array_equal(ungrouped, image_by_image)


def test_the_group_column_of_predictions_reaches_the_draws(tmp_path, images):
    """evaluate writes the group beside each image; the bootstrap draws by it, and records how many groups it drew."""
    labels, scores = images
    grouped = tmp_path / "grouped.csv"
    with grouped.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "is_fake", "p_fake", "source", "group"])
        for i, (name, p) in enumerate(sorted(scores.items())):
            group = "" if labels[name][1] == "gan" else f"{labels[name][1]}-{labels[name][0]}-{i // 10}"
            writer.writerow([name, labels[name][0], f"{round(p, 1):.6f}", labels[name][1], group])
    plain = predictions(tmp_path / "plain.csv", {name: round(p, 1) for name, p in scores.items()}, labels)
    drawn = bootstrap.main([str(grouped), str(grouped), "--replicates", "20"])
    assert drawn["groups"] == 200 + 62  # gan's 200 images each alone; the other 620 in tens
    assert bootstrap.main([str(plain), str(plain), "--replicates", "20"])["groups"] == 820


def test_evaluate_writes_each_images_group_beside_its_score(tmp_path, model_dir):
    """predictions.csv carries the --group-column, "" for an image without one, so the bootstrap can draw by it."""
    with (SHARED_DATA / "manifest.csv").open() as f:
        manifest = list(csv.DictReader(f))
    rows = [row for row in manifest if row["source"] == "celebrity_photos"][:3]
    rows += [row for row in manifest if row["source"] == "lfw_faceswap" and row["label"] == "fake"][:2]
    data = tmp_path / "faces.csv"
    with data.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "source", "group"])
        writer.writeheader()
        writer.writerows({**{key: row[key] for key in ("label", "source", "group")}, "file": str(SHARED_DATA / row["file"])}
                         for row in rows)
    evaluate.main(["--model", str(model_dir), "--dataset", str(data), "--image-column", "file", "--source-column",
                   "source", "--group-column", "group", "--split", "all", "--output-dir", str(tmp_path / "eval"),
                   "--precision", "fp32"])
    written = {Path(path).name: (group, source) for path, (_, _, source, group) in
               bootstrap.read_predictions(tmp_path / "eval" / "predictions.csv").items()}
    assert written == {Path(row["file"]).name: (row["group"], row["source"]) for row in rows}
    assert {group for group, _ in written.values()} == {rows[0]["group"], ""}  # a person's photos, and none


def test_excluded_images_leave_the_comparison_and_a_list_leaving_one_class_is_refused(tmp_path, images, monkeypatch):
    labels, scores = images
    monkeypatch.chdir(tmp_path)  # evaluate names files from the working folder; the list names them absolutely
    a = predictions(tmp_path / "a.csv", scores, labels)
    gan = sorted(name for name in scores if name.startswith("gan/"))
    with (tmp_path / "trained.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label"])
        writer.writerows([str(tmp_path / name), "fake"] for name in gan)
    result = bootstrap.main([str(a), str(a), "--exclude", str(tmp_path / "trained.csv"), "--replicates", "20"])
    assert result["images"] == len(scores) - len(gan) and result["excluded"] == str(tmp_path / "trained.csv")
    kept = {name: labels[name] for name in scores if name not in gan}
    files = sorted(kept)
    fitted = evaluate.calibrate({"is_fake": [kept[f][0] for f in files], "p_fake": [scores[f] for f in files],
                                 "sources": [kept[f][1] for f in files]}, 0.05, per_source=False)
    assert result["fakes_caught"]["first"]["stored_images"] == pytest.approx(fitted["fakes_caught"], abs=1e-6)
    fakes = [name for name in scores if labels[name][0]]
    with (tmp_path / "all_fakes.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["file"], *([name] for name in fakes)])  # relative: from the list's folder
    with pytest.raises(SystemExit, match="both real and fake"):
        bootstrap.main([str(a), str(a), "--exclude", str(tmp_path / "all_fakes.csv")])


def test_intervals_of_a_report_at_its_stored_threshold(tmp_path, images, monkeypatch):
    """training.intervals: the stored photos' numbers at the served threshold, each inside its 95% interval; a report
    scored without a stored threshold is refused by what to do."""
    from training import intervals
    labels, scores = images
    report = tmp_path / "test"
    report.mkdir()
    predictions(report / "predictions.csv", scores, labels)
    (report / "metrics.json").write_text('{"split": "test", "served": {"threshold": 0.7}}')
    result = intervals.main([str(report), "--replicates", "200", "--output", str(tmp_path / "i.json")])
    files = sorted(scores)
    fake = np.array([labels[f][0] for f in files], dtype=bool)
    p = np.array([round(scores[f], 6) for f in files])
    numbers = result["numbers"]
    assert numbers["fakes_caught"]["stored_images"] == pytest.approx(np.mean(p[fake] >= 0.7))
    assert numbers["reals_flagged"]["stored_images"] == pytest.approx(np.mean(p[~fake] >= 0.7))
    hard = np.array([labels[f][1] == "hard_reals" for f in files])
    assert numbers["hard_reals: reals flagged"]["stored_images"] == pytest.approx(np.mean(p[hard] >= 0.7))
    assert "hard_reals: fakes caught" not in numbers and "gan: reals flagged" not in numbers
    for key in ("roc_auc", "fakes_caught", "reals_flagged", "hard_reals: reals flagged"):
        low, high = numbers[key]["interval_95"]
        assert low < numbers[key]["stored_images"] < high
    # the small source's interval is wider than the pooled one
    width = lambda key: np.diff(numbers[key]["interval_95"])[0]
    assert width("hard_reals: reals flagged") > 2 * width("reals_flagged")
    gan = [name for name in files if labels[name][1] == "gan"]
    (tmp_path / "seen.csv").write_text("file\n" + "".join(f"{report / name}\n" for name in gan))  # evaluate ran in report/
    monkeypatch.chdir(report)
    kept = intervals.main([str(report), "--replicates", "20", "--exclude", str(tmp_path / "seen.csv")])
    rest = np.array([labels[f][1] != "gan" for f in files])
    assert kept["images"] == len(files) - len(gan) and "gan: fakes caught" not in kept["numbers"]
    assert kept["numbers"]["fakes_caught"]["stored_images"] == pytest.approx(np.mean(p[fake & rest] >= 0.7))
    (report / "metrics.json").write_text('{"split": "test"}')
    with pytest.raises(SystemExit, match="evaluate a published folder"):
        intervals.main([str(report)])


def test_the_logit_mean_of_two_reports_is_calibrated_by_evaluates_rule_and_counts_the_fakes_both_miss(tmp_path, images):
    from training import logit_mean
    labels, scores = images
    rng = np.random.default_rng(1)
    other = {name: float(np.clip(p + rng.normal(0, 0.1), 0.001, 0.999)) for name, p in scores.items()}
    folders = []
    for name, table, threshold in (("a", scores, 0.6), ("b", other, 0.65)):
        folder = tmp_path / name
        folder.mkdir()
        with (folder / "predictions.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "is_fake", "p_fake", "source", "group", "p_fake_calibrated"])
            for file, p in table.items():
                writer.writerow([file, labels[file][0], f"{p:.6f}", labels[file][1], "", f"{p:.6f}"])
        (folder / "metrics.json").write_text(json.dumps({"model": name, "split": "validation", "faces": True, "face_margin": 0.6,
                                                         "calibration": {"threshold": threshold}}))
        folders.append(folder)
    report = logit_mean.main([*map(str, folders), "--output-dir", str(tmp_path / "mean"), "--fpr-per-source",
                              "--min-source-reals", "50"])
    files = list(scores)
    logit = lambda p: np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
    mean = 1 / (1 + np.exp(-(logit(np.array([round(scores[f], 6) for f in files])) +
                             logit(np.array([round(other[f], 6) for f in files]))) / 2))
    fitted = evaluate.calibrate({"is_fake": [labels[f][0] for f in files], "p_fake": mean.tolist(),
                                 "sources": [labels[f][1] for f in files]}, 0.05, 0.6, per_source=True, min_source_reals=50,
                                 pooled_cap=0.05)
    assert report["calibration"]["threshold"] == pytest.approx(fitted["threshold"])
    assert report["calibration"]["fakes_caught"] == pytest.approx(fitted["fakes_caught"])
    fake = [f for f in files if labels[f][0]]
    both = sum(round(scores[f], 6) < 0.6 and round(other[f], 6) < 0.65 for f in fake)
    assert report["fakes_missed"] == {"first": sum(round(scores[f], 6) < 0.6 for f in fake),
                                      "second": sum(round(other[f], 6) < 0.65 for f in fake), "both": both}
    assert (tmp_path / "mean" / "predictions.csv").is_file()
    (folders[1] / "predictions.csv").write_text("file,is_fake,p_fake,source\nx.jpg,1,0.5,gan\n")
    with pytest.raises(SystemExit, match="different images"):
        logit_mean.main([*map(str, folders), "--output-dir", str(tmp_path / "x")])
