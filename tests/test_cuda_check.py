"""benchmarks.cuda_check, the script that checks the CUDA path (training, resume, evaluation, serving) on a GPU."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import cuda_check


@pytest.mark.slow
def test_dry_run_on_the_cpu_trains_resumes_evaluates_and_serves(tmp_path):
    """The script itself, without a GPU: every check it makes must be true, and it writes what it measured."""
    output = tmp_path / "check.json"
    assert cuda_check.main(["--device", "cpu", "--model", "trained", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["passed"] and set(result["checks"]) == {"train_and_resume", "evaluate_calibrate", "same_p_fake_as_cpu",
                                                          "same_verdicts_as_cpu", "same_cam_as_cpu"}
    assert [row["epoch"] for row in result["train"]["epochs"]] == [1, 2, 3]
    assert result["speed"]["predict_with_cam_images_per_s"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_says_so(tmp_path, caplog):
    assert cuda_check.main(["--output", str(tmp_path / "check.json")]) == 2
    assert "no CUDA GPU here" in caplog.text
    assert not (tmp_path / "check.json").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_a_gpu_the_bundled_model_agrees_with_the_cpu(tmp_path):
    output = tmp_path / "check.json"
    assert cuda_check.main(["--output", str(output)]) == 0, output.read_text()
