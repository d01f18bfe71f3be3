"""Would an NPR artefact expert help? A leave-one-source-out measurement, not a product model.

    python -m training.npr_probe --output-dir runs/npr --dataset ../shared/data/manifest.csv --image-column file \
        --group-column group --source-column source --sources gan_faces_site sdfd_diffusion --minutes 8

NPR (Tan et al., "Rethinking the Up-Sampling Operations in CNN-based Generative Network for Generalizable
Deepfake Detection", CVPR 2024) trains the first two stages of a ResNet-50 from scratch on the residual
x − up(down(x)) (nearest neighbour, factor 2): the local pixel correlations that a generator's up-sampling leaves.
For each held-out source of fakes this trains such a net without that source for a fixed time, on random crops
taken at each image's own pixel grid (never resized: resizing erases the traces it reads), sampled balanced per
source and label, then reports ROC-AUC
  - on the validation split (in-domain), and
  - on the held-out source's fakes against the validation reals of every other source,
each on centre crops as stored and after what a third-party photo usually went through (down-scaled to 0.75 and
re-encoded as JPEG at quality 75). An expert is worth combining with the main model only where the held-out
numbers are well above chance (0.5). Writes OUTPUT/npr_probe.json and OUTPUT/npr_probe.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from torchvision import transforms as T

from detector.errors import run_cli
from detector.logs import configure_logging

from . import robustness
from .data import add_data_arguments, attach_transform, balanced_weights, collate, held_out_set, load_splits, spec_from_args
from .metrics import binary_metrics, fmt

logger = logging.getLogger(__name__)


def npr_residual(pixels: torch.Tensor) -> torch.Tensor:
    """x − up(down(x)), nearest neighbour, factor 2 (sides are cropped to even first)."""
    h, w = pixels.shape[-2] // 2 * 2, pixels.shape[-1] // 2 * 2
    x = pixels[..., :h, :w]
    down = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="nearest")
    return x - torch.nn.functional.interpolate(down, scale_factor=2.0, mode="nearest")


class NPRNet(torch.nn.Module):
    """The first two stages of a ResNet-50 (timm), from scratch, on the NPR residual; two classes (real, fake)."""

    def __init__(self):
        super().__init__()
        net = timm.create_model("resnet50", pretrained=False)
        self.body = torch.nn.Sequential(net.conv1, net.bn1, net.act1, net.maxpool, net.layer1, net.layer2)
        self.head = torch.nn.Linear(512, 2)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.body(npr_residual(pixels) * 4.0)  # the residual is small; scale it to a unit-ish range
        return self.head(features.mean(dim=(2, 3)))


_DOWNSCALE, _JPEG = robustness.downscale(0.75), robustness.jpeg(75)


def degrade(image: Image.Image) -> Image.Image:
    """What a third-party photo usually went through: a resize and a JPEG re-encode (training.robustness's)."""
    return _JPEG(_DOWNSCALE(image))


def scores(model: NPRNet, dataset, crop: int, degraded: bool, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    steps = [T.Lambda(degrade)] if degraded else []
    transform = T.Compose([*steps, T.CenterCrop(crop), T.ToTensor()])
    loader = torch.utils.data.DataLoader(attach_transform(dataset, transform), batch_size=batch_size, collate_fn=collate)
    p_fake, is_fake = [], []
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            p_fake.append(model(batch["pixel_values"]).float().softmax(-1)[:, 1].numpy())
            is_fake.append(batch["target"].numpy())
    return np.concatenate(is_fake), np.concatenate(p_fake)


def probe(spec, source: str, minutes: float, crop: int, batch_size: int, lr: float, workers: int, seed: int) -> dict:
    torch.manual_seed(seed)
    held_spec = replace(spec, hold_out_source=source)
    train_set, val_set = load_splits(held_spec, check=False)
    weights = balanced_weights(train_set, spec.source_column)
    sampler = torch.utils.data.WeightedRandomSampler(torch.from_numpy(weights), num_samples=10**7, replacement=True)
    transform = T.Compose([T.RandomCrop(crop, pad_if_needed=True), T.RandomHorizontalFlip(), T.ToTensor()])
    loader = torch.utils.data.DataLoader(attach_transform(train_set, transform), batch_size=batch_size, sampler=sampler,
                                         num_workers=workers, collate_fn=collate)
    model = NPRNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    logger.info("NPR probe without %s: %d training images, batch %d, %g minutes", source, len(train_set), batch_size, minutes)
    started, steps, seen, total = time.perf_counter(), 0, 0, 0.0
    model.train()
    for batch in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(batch["pixel_values"]), batch["target"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps, seen, total = steps + 1, seen + len(batch["target"]), total + loss.item()
        if steps % 50 == 0:
            logger.info("step %d: mean loss %.4f", steps, total / 50)
            total = 0.0
        if time.perf_counter() - started > minutes * 60:
            break
    train_s = time.perf_counter() - started
    held = held_out_set(held_spec)
    row = {"source": source, "steps": steps, "images": seen, "train_seconds": train_s, "images_per_s": seen / train_s}
    for name, dataset in (("in_domain", val_set), ("held_out", held)):
        for degraded in (False, True):
            is_fake, p_fake = scores(model, dataset, crop, degraded)
            row[f"{name}{'_degraded' if degraded else ''}_roc_auc"] = binary_metrics(is_fake, p_fake)["roc_auc"]
    logger.info("without %s: %s", source, row)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| held-out fakes | training steps (images, time) | in-domain val ROC-AUC | after resize + JPEG | held-out ROC-AUC | after resize + JPEG |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| `{r['source']}` | {r['steps']} ({r['images']} images, {r['train_seconds'] / 60:.1f} min) | "
                     f"{fmt(r['in_domain_roc_auc'], 3)} | {fmt(r['in_domain_degraded_roc_auc'], 3)} | "
                     f"{fmt(r['held_out_roc_auc'], 3)} | {fmt(r['held_out_degraded_roc_auc'], 3)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--sources", nargs="+", required=True, help="sources of fakes to hold out, one row each")
    parser.add_argument("--minutes", type=float, default=8.0, help="training time per row")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    configure_logging()
    if not args.source_column:
        raise SystemExit("--sources needs --source-column (the column that names each image's source)")
    spec = spec_from_args(args)
    rows = [probe(spec, source, args.minutes, args.crop, args.batch_size, args.lr, args.workers, args.seed)
            for source in args.sources]
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "npr_probe.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    (output / "npr_probe.md").write_text(table(rows))
    logger.info("wrote %s/npr_probe.json and npr_probe.md\n%s", output, table(rows))
    return rows


if __name__ == "__main__":
    run_cli(main)
