"""The training commands as a user runs them: a mistake gets one line that says what to do, not a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command, message", [
    (["training.train", "--dataset", "{tmp}/missing", "--output-dir", "{tmp}/run"], "error: Could not load dataset"),
    (["training.evaluate", "--model", "{tmp}/no-model", "--dataset", "{tmp}/missing", "--output-dir", "{tmp}/eval"],
     "error: Could not load dataset"),
    (["training.publish", "--model", "{tmp}/no-model", "--metrics", "{tmp}/m.json", "--output-dir", "{tmp}/out"],
     "error: {tmp}/no-model"),
    (["training.train", "--dataset", "{tmp}/missing", "--face-crops", "0.5", "--aligned-framing", "0.7"],
     "error: --face-crops and --aligned-framing are probabilities of one draw"),
    (["training.compare", "--report", "before={tmp}/missing.json", "--output", "{tmp}/t.md"],
     "error: Could not read the report {tmp}/missing.json"),
])
def test_a_mistake_ends_with_its_message_and_status_2(tmp_path, command, message):
    argv = [part.format(tmp=tmp_path) for part in command]
    result = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert message.format(tmp=tmp_path) in result.stderr
