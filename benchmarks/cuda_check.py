"""Does the CUDA path run? Training, resume, evaluation and serving on a GPU, with the project's own commands.

    python -m benchmarks.cuda_check --output cuda_check.json

Needs a CUDA GPU and nothing else: the training images are made from `examples/` (four photos, cropped,
flipped and rescaled into 24 per class), so no dataset has to travel with it. It checks that
  1. `training.train` trains with the generalisation recipe (pseudo-fakes, quality equalising, face crops) on the
     GPU in bf16 autocast where the GPU has it, channels_last, writes best/ and last/, and `--resume` goes on;
  2. `training.evaluate --calibrate --faces` scores and calibrates on the GPU;
  3. the bundled model (or --model) on the GPU (bf16 weights where native) gives the same p(fake) as on the CPU in fp32,
     with and without face search, and its Grad-CAM (both stages) matches the CPU's;
and reports the GPU's speed for that model (probabilities + Grad-CAM at batch 1 and 64, analyze with rendering).
Exits non-zero if a check fails.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from benchmarks.run import EXAMPLES, medians_ms
from detector import Detector, explain
from detector.logs import configure_logging
from detector.model import load_model
from training import evaluate, train

logger = logging.getLogger("benchmarks.cuda_check")


def image_folder(root: Path, per_class: int = 24, seed: int = 0) -> Path:
    """`real/` and `fake/` sub-folders of variants (crop, flip, rescale) of the example photos."""
    rng = random.Random(seed)
    for path in EXAMPLES:
        label = path.name.split("_")[0]
        (root / label).mkdir(parents=True, exist_ok=True)
    for label in ("real", "fake"):
        sources = [p for p in EXAMPLES if p.name.startswith(label + "_")]
        for index in range(per_class):
            image = Image.open(sources[index % len(sources)]).convert("RGB")
            w, h = image.size
            f = rng.uniform(0.8, 1.0)
            left, top = rng.uniform(0, w * (1 - f)), rng.uniform(0, h * (1 - f))
            image = image.crop((int(left), int(top), int(left + w * f), int(top + h * f)))
            if rng.random() < 0.5:
                image = ImageOps.mirror(image)
            side = rng.choice([160, 224, 320])
            image.resize((side, round(side * image.height / image.width))).save(root / label / f"{index:03d}.jpg", quality=92)
    return root


def synced(fn):
    """`fn`, then wait for the GPU to finish what it queued, so that a timer around it measures the GPU's work."""
    def call():
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    return call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="cuda_check.json")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--model", help="the model served in checks 3 and timed (default: the bundled model; 'trained': "
                                            "the one check 1 trains, when the bundled weights cannot travel)")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself, without a GPU")
    args = parser.parse_args(argv)
    configure_logging()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        logger.error("no CUDA GPU here: this check needs one (--device cpu for a dry run)")
        return 2
    import accelerate
    import datasets
    import timm

    result: dict = {"gpu": torch.cuda.get_device_name(0) if device == "cuda" else "none (dry run on the CPU)",
                    "torch": torch.__version__, "timm": timm.__version__,
                    "accelerate": accelerate.__version__, "datasets": datasets.__version__,
                    "bf16_native": device == "cuda" and torch.cuda.is_bf16_supported(), "checks": {}}
    checks = result["checks"]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = image_folder(tmp / "faces")
        common = ["--dataset", str(data), "--output-dir", str(tmp / "run"), "--img-size", str(args.img_size),
                  "--batch-size", "16", "--max-steps-per-epoch", "3", "--workers", "2", "--mixed-precision", "auto",
                  "--scheduler", "cosine", "--lr", "1e-3", "--warmup-epochs", "0.5", "--pseudo-fakes", "0.25",
                  "--equalise-quality", "--face-crops", "0.5", "--skip-image-check"]
        started = time.perf_counter()
        state = train.main([*common, "--epochs", "2"])
        state = train.main([*common, "--epochs", "3", "--resume"])
        rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
        best = tmp / "run" / "best"
        checks["train_and_resume"] = (state["epoch"] == 3 and [r["epoch"] for r in rows] == [1, 2, 3]
                                      and (best / "model.safetensors").is_file()
                                      and all(np.isfinite(r["train_loss"]) for r in rows))
        result["train"] = {"seconds": time.perf_counter() - started, "epochs": [
            {k: r[k] for k in ("epoch", "train_loss", "val_roc_auc", "train_images_per_s")} for r in rows]}

        report = evaluate.main(["--model", str(best), "--output-dir", str(tmp / "eval"), "--dataset", str(data),
                                "--calibrate", "--faces", "--device", device])
        calibrated = report.get("calibration") or {}
        checks["evaluate_calibrate"] = report["metrics"]["n"] > 0 and calibrated.get("threshold") is not None
        result["evaluate"] = {"n": report["metrics"]["n"], "roc_auc": report["metrics"]["roc_auc"],
                              "threshold": calibrated.get("threshold")}

        loaded = load_model(best if args.model == "trained" else args.model)  # None: the bundled model
        # the model as served on `device` (bf16 where native) and the reference, fp32 on the CPU; each CAM stage
        # (a dry run serves in fp32 too: bf16 on a CPU is not what this checks, and the heat map of a model trained
        # 6 steps is noise that bf16's rounding reorders: stage -2 correlates at 0.93)
        ways = {"gpu": {"device": device, **({"precision": "fp32"} if device == "cpu" else {})},
                "cpu": {"device": "cpu", "precision": "fp32"}}
        served = {(way, stage): Detector(loaded, cam_stage=stage, **options)
                  for way, options in ways.items() for stage in (-1, -2)}
        gpu, cpu = served["gpu", -1], served["cpu", -1]
        photos = [Image.open(p).convert("RGB") for p in EXAMPLES]
        agreement, same_verdicts = {}, True
        for faces in (False, True):
            on_gpu, on_cpu = gpu.analyze_batch(photos, faces=faces), cpu.analyze_batch(photos, faces=faces)
            same_verdicts &= all(a.label == b.label for a, b in zip(on_gpu, on_cpu))
            p_gpu, p_cpu = [a.p_fake for a in on_gpu], [a.p_fake for a in on_cpu]
            agreement["faces" if faces else "whole"] = {"gpu": p_gpu, "cpu": p_cpu,
                                                       "max_abs_diff": float(np.max(np.abs(np.subtract(p_gpu, p_cpu))))}
        result["served_model"] = {"model": gpu.name, "dtype": str(gpu.dtype), "p_fake": agreement}
        checks["same_p_fake_as_cpu"] = all(v["max_abs_diff"] < 0.02 for v in agreement.values())
        checks["same_verdicts_as_cpu"] = same_verdicts
        cam_corr = {}
        for stage in (-1, -2):
            g = served["gpu", stage].analyze(photos[0]).activation_map()
            c = served["cpu", stage].analyze(photos[0]).activation_map()
            cam_corr[str(stage)] = float(np.corrcoef(np.ravel(g), np.ravel(c))[0, 1])
        result["served_model"]["cam_correlation_gpu_vs_cpu"] = cam_corr
        checks["same_cam_as_cpu"] = all(v > 0.95 for v in cam_corr.values())

        # probabilities + Grad-CAM in one forward (the serving path, pixels ready), then the whole analyze + render
        one = gpu.preprocess(photos[0])[None].to(device)
        batch = one.repeat(64 if device == "cuda" else 4, 1, 1, 1)
        speed = medians_ms({
            "predict_with_cam_batch1_ms": synced(lambda: explain.predict_with_cam(gpu.model, one)),
            "predict_with_cam_batch_ms": synced(lambda: explain.predict_with_cam(gpu.model, batch)),
            "analyze_render_ms": synced(lambda: gpu.analyze(photos[0]).render()),
            "analyze_faces_render_ms": synced(lambda: gpu.analyze(photos[0], faces=True).render()),
        }, repeats=30)
        result["speed"] = {**speed, "batch": len(batch),
                           "predict_with_cam_images_per_s": len(batch) / speed["predict_with_cam_batch_ms"] * 1000}
    result["passed"] = all(checks.values())
    Path(args.output).write_text(json.dumps(result, indent=2))
    logger.info("CUDA check on %s: %s", result["gpu"], json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
