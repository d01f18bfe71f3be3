"""training.bootstrap: the paired bootstrap of fakes caught at a refitted threshold, on predictions files."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

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
