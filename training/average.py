"""Average the weights of detectors that share one architecture: a model and its fine-tuned continuation.

    python -m training.average --model models/deepfake-detector --model runs/framing/best \
        --weight 0.5 --weight 0.5 --output-dir runs/averaged
    python -m training.evaluate --model runs/averaged --calibrate ...   # then publish it like a training run

Weight-space averaging of a network and a fine-tuned copy of it (Wortsman et al., "Robust fine-tuning of zero-shot
models", CVPR 2022, "WiSE-FT") keeps much of what each one does well: here the bundled weights' in-domain accuracy
and a fine-tune's robustness to reframing (docs/generalisation/framing.md). Only models that descend from the same
weights average well; averaging unrelated networks gives noise.

The folder written holds model.safetensors (float32), the last model's config.json without its calibration (the
averaged model must be calibrated again with `training.evaluate --calibrate`) and the last model's training.json
with `averaged` added (models, weights, the sha256 of each weights file), which `training.publish` shows in the
card's recipe. It is written next to its destination and renamed into place (`detector.model.staged_folder`).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from detector.errors import DetectorError, run_cli
from detector.logs import configure_logging
from detector.model import WEIGHTS_FILE, read_config, resolve_folder, staged_folder, weights_sha256

from . import TRAINING_FILE

logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="MODEL",
                        help="a model folder or Hub id; give it twice or more")
    parser.add_argument("--weight", action="append", type=float, metavar="W",
                        help="one per --model, in the same order (default: equal weights); they are scaled to sum to 1")
    parser.add_argument("--output-dir", required=True)
    return parser.parse_args(argv)


def normalised(weights: list[float] | None, count: int) -> list[float]:
    """The weights, scaled to sum to 1 (equal when none are given)."""
    if count < 2:
        raise DetectorError("Averaging needs two models or more: pass --model twice.")
    weights = weights or [1.0] * count
    if len(weights) != count:
        raise DetectorError(f"{len(weights)} --weight for {count} --model: give one weight per model, or none.")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise DetectorError("Weights must be zero or more, and not all zero.")
    return [w / sum(weights) for w in weights]


def average_state(states: list[dict[str, torch.Tensor]], weights: list[float], names: list[str]) -> dict[str, torch.Tensor]:
    """The weighted mean of every floating-point tensor; integer tensors (BatchNorm's step counters) from the last
    model. Every state must hold the same tensors with the same shapes."""
    first, last = states[0], states[-1]
    for state, name in zip(states[1:], names[1:]):
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise DetectorError(f"{name} does not have the same layers as {names[0]}: only models of one architecture "
                                "and size can be averaged.")
    return {key: (sum(w * s[key].float() for w, s in zip(weights, states)).contiguous()
                  if last[key].is_floating_point() else last[key].clone())
            for key in last}


def average(models: list[str], output: Path, weights: list[float] | None = None) -> Path:
    weights = normalised(weights, len(models))
    folders = [resolve_folder(str(model)) for model in models]
    configs = [read_config(folder) for folder in folders]
    for folder, config in zip(folders[1:], configs[1:]):
        for key in ("architecture", "model_args", "label_names"):
            if config.get(key) != configs[0].get(key):
                raise DetectorError(f"{folder} and {folders[0]} differ in {key}: they cannot be averaged.")
    for folder in folders:
        if not (folder / WEIGHTS_FILE).is_file():
            raise DetectorError(f"{folder} has no {WEIGHTS_FILE}.")
    state = average_state([load_file(str(folder / WEIGHTS_FILE)) for folder in folders], weights, [str(f) for f in folders])

    config = {key: value for key, value in configs[-1].items() if key not in ("calibration", "unseen_reals_called_fake")}
    training_path = folders[-1] / TRAINING_FILE
    training = json.loads(training_path.read_text()) if training_path.is_file() else {}
    training["averaged"] = {"models": [str(m) for m in models], "weights": weights,
                            "sha256": [weights_sha256(folder) for folder in folders]}  # a folder's path may be reused

    output = Path(output)
    with staged_folder(output) as staging:
        save_file(state, str(staging / WEIGHTS_FILE))
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (staging / TRAINING_FILE).write_text(json.dumps(training, indent=2) + "\n")
    logger.info("averaged %s with weights %s into %s (calibrate it again with training.evaluate --calibrate)",
                ", ".join(str(m) for m in models), ", ".join(f"{w:.3g}" for w in weights), output)
    return output


def main(argv=None) -> Path:
    args = parse_args(argv)
    configure_logging()
    return average(args.model, Path(args.output_dir), args.weight)


if __name__ == "__main__":
    run_cli(main)
