"""training.npr_probe: the NPR residual, the two-stage net, and a short leave-one-source-out run on real photos."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from conftest import SHARED_DATA, small_manifest
from training import npr_probe


def test_residual_is_the_image_minus_its_nearest_neighbour_up_down_copy():
    x = torch.rand(2, 3, 9, 10)
    r = npr_probe.npr_residual(x)
    assert r.shape == (2, 3, 8, 10)  # odd sides are cropped to even
    assert torch.all(r[..., ::2, ::2] == 0)  # the pixel each 2×2 block keeps
    assert torch.allclose(r[..., 1, 1], x[..., 1, 1] - x[..., 0, 0])
    assert torch.allclose(r[..., 0, 3], x[..., 0, 3] - x[..., 0, 2])


def test_residual_of_a_nearest_neighbour_upscaled_image_is_zero():
    """What NPR reads: a picture made by nearest up-sampling has no residual, a natural one has."""
    small = torch.rand(1, 3, 16, 16)
    up = torch.nn.functional.interpolate(small, scale_factor=2.0, mode="nearest")
    assert npr_probe.npr_residual(up).abs().max() == 0
    assert npr_probe.npr_residual(torch.rand(1, 3, 32, 32)).abs().max() > 0.1


def test_net_is_two_resnet50_stages_with_a_two_class_head():
    model = npr_probe.NPRNet()
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 2)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000  # stages 1-2 of ResNet-50 only (1.4 M)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")
def test_a_short_run_reports_in_domain_and_held_out_auc(tmp_path):
    """On 10 photos of each source and class of the shared data (conftest.small_manifest)."""
    with (SHARED_DATA / "manifest.csv").open() as f:
        pairs = {(row["source"], row["label"]): 10 for row in csv.DictReader(f)}
    manifest = small_manifest(tmp_path / "small.csv", pairs)
    rows = npr_probe.main(["--dataset", str(manifest), "--image-column", "file", "--source-column", "source", "--sources", "gan_faces_site", "--minutes", "0.05",
                           "--crop", "64", "--batch-size", "8", "--workers", "0", "--output-dir", str(tmp_path / "out")])
    assert rows[0]["source"] == "gan_faces_site" and rows[0]["steps"] >= 1
    saved = json.loads((tmp_path / "out" / "npr_probe.json").read_text())["rows"][0]
    for key in ("in_domain_roc_auc", "in_domain_degraded_roc_auc", "held_out_roc_auc", "held_out_degraded_roc_auc"):
        assert 0 <= saved[key] <= 1
    assert "`gan_faces_site`" in (tmp_path / "out" / "npr_probe.md").read_text()
