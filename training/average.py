"""Average the weights of detectors that share one architecture: a model and its fine-tuned continuation.

    python -m training.average --model models/deepfake-detector --model runs/framing/best \
        --weight 0.5 --weight 0.5 --output-dir runs/averaged
    python -m training.evaluate --model runs/averaged --calibrate ...   # then publish it like a training run

Weight-space averaging of a network and a fine-tuned copy of it (Wortsman et al., "Robust fine-tuning of zero-shot
models", CVPR 2022, "WiSE-FT") keeps much of what each one does well: here the bundled weights' in-domain accuracy
and a fine-tune's robustness to reframing (docs/generalisation/framing.md). Only models that descend from the same
weights average well; averaging unrelated networks gives noise.

Batch-norm running statistics are not averaged: the mean of two models' statistics is not the statistics of the
averaged network's own activations. They are measured again (`torch.optim.swa_utils.update_bn`) on a seeded sample of
the training photos, --bn-batches batches of --bn-batch-size, drawn from the training split of the data the last
model's training.json names (rebuilt as training.train builds it: same dataset, columns, seed and fraction) and
preprocessed as the detector serves them (training.train.photo_batches); --dataset points elsewhere when that path has
moved.

The folder written holds model.safetensors (float32), the last model's config.json without its calibration (the
averaged model must be calibrated again with `training.evaluate --calibrate`) and the last model's training.json
with `averaged` added (models, weights, the sha256 of each weights file, and how the batch-norm statistics were
measured), which `training.publish` describes in the card. It is written next to its destination and renamed into
place (`detector.model.staged_folder`).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import update_bn

from detector.errors import DetectorError, run_cli
from detector.logs import configure_logging
from detector.model import WEIGHTS_FILE, load_model, read_config, resolve_folder, staged_folder, weights_sha256

from . import TRAINING_FILE
from .data import load_splits, spec_from_args

logger = logging.getLogger(__name__)
BN_BATCHES, BN_BATCH_SIZE = 16, 32  # 512 photos: every channel's mean and variance to well under a percent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="MODEL",
                        help="a model folder or Hub id; give it twice or more")
    parser.add_argument("--weight", action="append", type=float, metavar="W",
                        help="one per --model, in the same order (default: equal weights); they are scaled to sum to 1")
    parser.add_argument("--output-dir", required=True)
    bn = parser.add_argument_group("batch-norm statistics, measured again on training photos")
    bn.add_argument("--bn-batches", type=int, default=BN_BATCHES, help="batches of training photos they are measured on")
    bn.add_argument("--bn-batch-size", type=int, default=BN_BATCH_SIZE)
    bn.add_argument("--bn-seed", type=int, default=0, help="seed of the draw of training photos")
    bn.add_argument("--dataset", help="the training data (default: the dataset the last model's training.json names; "
                                      "its split is rebuilt from the columns, seed and fraction recorded there)")
    bn.add_argument("--device", help="cuda or cpu (default: cuda when available)")
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


def training_photos(training: dict, dataset: str | None):
    """The training split of the run `training` (a training.json) recorded, rebuilt as training.train builds it."""
    from .train import parse_args as train_args

    recorded = training.get("args") or {}
    source = dataset or recorded.get("dataset")
    if not source:
        raise DetectorError("The last model's training.json names no training data, on whose photos the batch-norm "
                            "statistics are measured again: pass --dataset (with the run's data options in its "
                            "training.json) or average models that training.train wrote.")
    args = {**vars(train_args(["--dataset", source])), **recorded, "dataset": source}
    return load_splits(spec_from_args(argparse.Namespace(**args)), check=False)[0]


def recompute_batch_norm(folder: Path, photos, batches: int, batch_size: int, seed: int,
                         device: str | None = None) -> dict[str, torch.Tensor]:
    """The state of the model in `folder` with every batch-norm layer's running mean and variance measured on
    `batches` batches of `photos` (a datasets.Dataset with an `image` column), a seeded draw: the mean over the batches
    of each batch's statistics (`torch.optim.swa_utils.update_bn`)."""
    from .train import photo_batches

    if batches < 1 or batch_size < 1:
        raise DetectorError("--bn-batches and --bn-batch-size must be 1 or more: the averaged network's batch-norm "
                            "statistics are measured on training photos, not averaged.")
    model = load_model(folder).model.float()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    update_bn(photo_batches(photos, model, batches * batch_size, seed, batch_size), model, device)
    return {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}


def average(models: list[str], output: Path, weights: list[float] | None = None, *, bn_batches: int = BN_BATCHES,
            bn_batch_size: int = BN_BATCH_SIZE, bn_seed: int = 0, dataset: str | None = None,
            device: str | None = None) -> Path:
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
    photos = training_photos(training, dataset)
    training["averaged"] = {"models": [str(m) for m in models], "weights": weights,
                            "sha256": [weights_sha256(folder) for folder in folders]}  # a folder's path may be reused

    output = Path(output)
    with staged_folder(output) as staging:
        save_file(state, str(staging / WEIGHTS_FILE))
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        measured = recompute_batch_norm(staging, photos, bn_batches, bn_batch_size, bn_seed, device)
        if measured.keys() != state.keys():
            raise DetectorError(f"The model built from {folders[-1]}'s config does not hold the averaged tensors.")
        save_file(measured, str(staging / WEIGHTS_FILE))
        used = min(len(photos), bn_batches * bn_batch_size)
        training["averaged"]["batch_norm"] = {
            "recomputed": True, "photos": used, "batches": -(-used // bn_batch_size), "batch_size": bn_batch_size,
            "seed": bn_seed, "dataset": dataset or (training.get("args") or {}).get("dataset"), "split": "train"}
        (staging / TRAINING_FILE).write_text(json.dumps(training, indent=2) + "\n")
    logger.info("averaged %s with weights %s into %s, batch-norm statistics measured on %d training photos (calibrate "
                "it again with training.evaluate --calibrate)", ", ".join(str(m) for m in models),
                ", ".join(f"{w:.3g}" for w in weights), output, used)
    return output


def main(argv=None) -> Path:
    args = parse_args(argv)
    configure_logging()
    return average(args.model, Path(args.output_dir), args.weight, bn_batches=args.bn_batches,
                   bn_batch_size=args.bn_batch_size, bn_seed=args.bn_seed, dataset=args.dataset, device=args.device)


if __name__ == "__main__":
    run_cli(main)
