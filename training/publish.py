"""Turn a training run's best checkpoint into a publishable Hub-layout folder, and optionally push it.

    python -m training.evaluate --model runs/faces/best ... --output-dir runs/faces/eval
    python -m training.publish --model runs/faces/best --metrics runs/faces/eval/metrics.json \
        --data-description data_description.md --output-dir models/deepfake-detector [--fp16]
    HF_TOKEN=... python -m training.publish ... --push owner/deepfake-detector

The folder holds config.json, model.safetensors and README.md, the model card rendered from
`model_card.md`. Every number in the card is read from a file (metrics.json from training.evaluate,
training.json from training.train); nothing is typed in by hand. The folder is written next to its
destination and renamed into place, so a failure leaves the old folder or none, never half of one.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors.torch import load_file, save_file

from detector.calibration import RAW_SCORES, WEIGHTS_KEY
from detector.errors import DetectorError, run_cli
from detector.explain import CAM_STAGES
from detector.faces import DEFAULT_MARGIN
from detector.logs import configure_logging
from detector.model import (HUB_FILES, LICENSE_FILE, NOT_OUR_WEIGHTS, WEIGHTS_FILE, feature_stride, is_hub_id,
                            load_model, pool_size, read_config, staged_folder, stored_dtype)

from . import TRAINING_FILE
from .data import (ALIGNED_CENTRE_Y, ALIGNED_WIDTH, FACE_CROP_MARGIN, FRAMING_ZOOM_IN, FRAMING_ZOOM_OUT, EqualiseQuality,
                   train_transform)
from .imagenet import describe_weights
from .leave_one_out import merged as merged_reports
from .leave_one_out import table as leave_one_out_table
from .metrics import UNDEFINED, fmt

TEMPLATE = Path(__file__).resolve().parent.parent / "model_card.md"
# metrics.json key → (model-index metric type, display name); fake is the positive class
CARD_METRICS = {
    "accuracy": ("accuracy", "Accuracy"),
    "precision": ("precision", "Precision (fake)"),
    "recall": ("recall", "Recall (fake caught)"),
    "f1": ("f1", "F1 (fake)"),
    "roc_auc": ("roc_auc", "ROC-AUC"),
    "average_precision": ("average_precision", "Average precision (fake)"),
    "fpr": ("fpr", "False-positive rate (real called fake)"),
}
LEGACY_ARCHITECTURE = "resnext50_32x4d"  # what runs made before --model trained (their args name none)
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".pkl", ".pickle", ".ckpt")
logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a training run's best/ folder (config.json, model.safetensors, training.json)")
    parser.add_argument("--metrics", required=True, help="metrics.json written by training.evaluate")
    parser.add_argument("--output-dir", required=True, help="the model folder to write, e.g. models/NAME")
    parser.add_argument("--fp16", action="store_true", help="store the weights in float16 (half the size; loads into float32)")
    parser.add_argument("--data-description", help="markdown file describing the training data, inserted into the card")
    parser.add_argument("--leave-one-out", metavar="JSON", action="append",
                        help="leave_one_out.json written by training.leave_one_out: its table goes into the card; give it "
                             "once per report to put the rows of several runs in one table")
    parser.add_argument("--test-metrics", metavar="JSON",
                        help="metrics.json of training.evaluate --split test on this model as published (its stored "
                             "calibration: publish once without it, evaluate that folder, publish again): the card's "
                             "test-split section, the numbers nothing was tuned on")
    parser.add_argument("--generalisation", metavar="MD",
                        help="before/after tables written by training.compare (from measured reports), inserted into the card")
    parser.add_argument("--cam-faithfulness", metavar="JSON",
                        help="the report of benchmarks.cam_faithfulness for these weights: the model's config then names "
                             "the heat map's stage, the finer one (-2) where it measured at least as faithful as the last")
    parser.add_argument("--notes", help="markdown file with notes on the training run (history, choices), inserted into the card")
    parser.add_argument("--model-name", help="title of the card (default: the output folder's name)")
    parser.add_argument("--dataset-name", help="the evaluation data's name in model-index (default: from metrics.json)")
    parser.add_argument("--license", default="other", help="Hub licence id (default 'other': see --license-name)")
    parser.add_argument("--license-name", default="research-only-non-commercial")
    parser.add_argument("--license-file", metavar="MD",
                        help=f"the licence's text, published as {LICENSE_FILE} and linked from the card (license_link); "
                             "required with --license other")
    parser.add_argument("--template", default=str(TEMPLATE), help="Jinja model card template")
    parser.add_argument("--push", metavar="OWNER/NAME", help="create (if needed) and upload to this Hub repo; token from HF_TOKEN")
    parser.add_argument("--repo-id", help="the Hub id the card's usage examples name (default: --push's)")
    parser.add_argument("--private", action="store_true", help="with --push: create the repo private")
    return parser.parse_args(argv)


def read_json(path: Path | None) -> dict | None:
    if path is None or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def write_weights(source: Path, target: Path, fp16: bool) -> str:
    """Copy the safetensors weights, casting floating tensors to float16 when asked; returns the dtype stored."""
    if not fp16:
        shutil.copyfile(source, target)
        return "float32"
    tensors = {name: t.half() if t.is_floating_point() else t for name, t in load_file(str(source)).items()}
    save_file({name: t.contiguous() for name, t in tensors.items()}, str(target), metadata={"format": "pt"})
    return "float16"


# --- the card -----------------------------------------------------------------------------------


def recipe_rows(training: dict) -> list[tuple[str, str]]:
    """The training recipe, as recorded by training.train in training.json."""
    args = training["args"]
    schedule = (f"linear warm-up ({args['warmup_epochs']} epochs) then cosine decay, per step"
                if args["scheduler"] == "cosine" else "ReduceLROnPlateau on validation loss")
    augment = train_transform.__doc__.strip().splitlines()[0].rstrip(".")
    return [
        ("architecture", f"`{args.get('model', LEGACY_ARCHITECTURE)}` (timm)"),
        ("initialisation", initialisation(training)),
        ("input size", f"{args['img_size']}×{args['img_size']} px"),
        ("optimizer", f"{args['optimizer']}, learning rate {args['lr']}, weight decay {args['weight_decay']}"),
        ("schedule", schedule),
        ("batch size", str(args["batch_size"])),
        ("epochs", f"{args['epochs']} planned; " + ("that run's" if training.get("averaged") else "these")
         + f" weights are from epoch {training['epoch']} (best validation ROC-AUC)"),
        ("loss", f"cross-entropy, label smoothing {args['label_smoothing']}"),
        ("augmentation", f"{augment}; strength {args['aug_strength']} (0 = crop and flip only, 1 = full)"
         + ("; the JPEG and blur/downscale steps replaced by quality equalising (below)" if args.get("equalise_quality") else "")),
        *generalisation_rows(args),
        ("mixed precision", str(args["mixed_precision"])),
        ("seed", str(args["seed"])),
    ]


def initialisation(training: dict) -> str:
    """Where the run's weights started; a folder is named with the sha256 of the weights it held then."""
    args, digest = training["args"], training.get("init_sha256")
    if args.get("init_from"):
        return (f"the weights of `{args['init_from']}`" + (f" (weights sha256 {digest[:12]}…)" if digest else "")
                + ", trained further")
    if args.get("pretrained_file"):
        return f"{describe_weights(args['pretrained_file'], args.get('bn_photos', 256))}; training/imagenet.py), fine-tuned"
    return "timm ImageNet weights (fine-tuned)" if args["pretrained"] else "from scratch (random initialisation)"


def averaged_text(training: dict | None) -> str | None:
    """What the card says of weights `training.average` made: which models were averaged, with which weights, and how
    the batch-norm statistics were obtained; None for the weights of one training run."""
    averaged = (training or {}).get("averaged")
    if not averaged:
        return None
    hashes = averaged.get("sha256") or [None] * len(averaged["models"])
    parts = " + ".join(f"{weight:.2g} × `{model}`" + (f" (weights sha256 {digest[:12]}…)" if digest else "")
                       for model, weight, digest in zip(averaged["models"], averaged["weights"], hashes))
    bn = averaged.get("batch_norm") or {}
    statistics = (f"Their batch-norm statistics were then measured again on {bn['photos']} training photos "
                  f"({bn['batches']} batches of {bn['batch_size']}, seed {bn['seed']}, preprocessed as the detector "
                  "serves them; `torch.optim.swa_utils.update_bn`), not averaged" if bn.get("recomputed") else
                  "Their batch-norm statistics are the models' statistics averaged like the weights (not measured "
                  "again on photos)")
    return (f"These weights are not one training run's: they are the average of {len(averaged['models'])} models, "
            f"tensor by tensor (`training.average`): {parts}. {statistics}; the average was then calibrated again. "
            f"The recipe below is that of the last of them, `{averaged['models'][-1]}`.")


def generalisation_rows(args: dict) -> list[tuple[str, str]]:
    """The parts of the recipe meant to stop source and quality cues from predicting the label (training.data)."""
    rows = []
    if args.get("balance"):
        rows.append(("sampling", "balanced: within each class a source is drawn in proportion to (its size) ** "
                     f"{args['balance_exponent']}, and real photos get the share that leaves labels 50/50 once "
                     "pseudo-fakes are made (with replacement, one epoch = as many draws as training images)"))
    if args.get("face_crops"):
        rows.append(("face-crop view", f"with probability {args['face_crops']}, the face the app's face search finds, "
                     "cropped square with a margin drawn from {:g}-{:g} of its side".format(
                         *args.get("face_crop_margin") or FACE_CROP_MARGIN)))
    if args.get("aligned_framing"):
        rows.append(("aligned view", f"with probability {args['aligned_framing']}, every image, real or fake, framed "
                     "around the face found as FFHQ aligns its photographs and the shared data's GAN faces come: the "
                     "face's box {:.0%}-{:.0%} of the frame's width, its centre at {:.0%}-{:.0%} of the height, mirrored "
                     "where the frame leaves the picture (training.data.FaceCropView)".format(
                         *ALIGNED_WIDTH, *ALIGNED_CENTRE_Y)))
    if args.get("pseudo_fakes"):
        rows.append(("self-blended pseudo-fakes", f"{args['pseudo_fakes']:.0%} of the real photos drawn become fakes: a "
                     "slightly altered copy of the photo blended into it inside a soft, deformed face mask "
                     "(training/self_blend.py)"))
    if args.get("equalise_quality"):
        first = " ".join(EqualiseQuality.__doc__.split(":", 1)[1].split(".")[0].split())
        rows.append(("quality equalising", f"every image, real or fake: {first}"))
    if args.get("framing"):
        (low, high), (_, wide) = FRAMING_ZOOM_IN, FRAMING_ZOOM_OUT
        rows.append(("framing", f"with probability {args['framing']}, every image, real or fake, framed anew: a square "
                     f"crop of {low:.0%}-{high:.0%} of its shorter side or the whole picture in a mirrored border up "
                     f"to {wide:g} times its size, at a random place (training.data.RandomFraming)"))
    return rows


def split_text(args: dict) -> str:
    """How training.data.split chose the validation rows, from the run's arguments."""
    by = "label" + (f" and `{args['source_column']}`" if args.get("source_column") else "")
    text = f"{args['val_fraction']:.0%} held out for validation, stratified by {by}"
    if args.get("group_column"):
        text += f", grouped by `{args['group_column']}` so no group is on both sides"
    return text + f" (seed {args['seed']}; a dataset's own validation split is used instead when it has one)"


def count_rows(data: dict) -> list[list[str]]:
    """Rows of (source, train real, train fake, validation real, validation fake) from training.json's counts."""
    train, val = data["train"], data["validation"]
    sources = sorted(set(train.get("by_source", {})) | set(val.get("by_source", {})))
    rows = []
    for source in sources:
        t, v = train["by_source"].get(source, {}), val["by_source"].get(source, {})
        rows.append([f"`{source}`", *(fmt(counts.get(name, 0)) for counts in (t, v) for name in ("real", "fake"))])
    rows.append(["**total**", *(fmt(counts[name]) for counts in (train, val) for name in ("real", "fake"))])
    return rows


def source_rows(per_source: dict) -> list[list[str]]:
    return [
        [f"`{name}`", fmt(m["n"]), fmt(m["n_real"]), fmt(m["n_fake"]), fmt(m["accuracy"]), fmt(m["roc_auc"]),
         fmt(m.get("average_precision")), fmt(m["fpr"]), fmt(m["recall"])]
        for name, m in per_source.items()
    ]


def same_split(evaluation: dict, training: dict | None) -> bool:
    """Did training.evaluate rebuild the training run's own validation split (same data, columns, seed, fraction)?"""
    if not training or evaluation.get("split") != "validation":
        return False
    data, args = evaluation.get("data") or {}, training["args"]
    keys = ("image_column", "label_column", "group_column", "source_column", "val_fraction", "seed")
    return data.get("source") == args["dataset"] and all(data.get(key) == args.get(key) for key in keys)


def base_model(args: dict) -> str | None:
    """The Hub model these weights were trained from, if any: --init-from a Hub id, or timm's ImageNet weights."""
    if is_hub_id(args.get("init_from")):
        return args["init_from"].removeprefix("hf-hub:")
    if args.get("pretrained"):
        import timm

        return timm.models.get_pretrained_cfg(args.get("model", LEGACY_ARCHITECTURE)).hf_hub_id
    return None


def eval_results(evaluation: dict, dataset_name: str) -> list[EvalResult]:
    """model-index entries: the measured values exactly as metrics.json holds them."""
    metrics, dataset = evaluation["metrics"], evaluation.get("dataset", "unknown")
    return [
        EvalResult(task_type="image-classification", task_name="Deepfake face detection",
                   dataset_type=dataset if is_hub_id(dataset) else "custom", dataset_name=dataset_name,
                   dataset_split=evaluation.get("split"), metric_type=metric_type, metric_name=name,
                   metric_value=metrics[key])
        for key, (metric_type, name) in CARD_METRICS.items()
        if metrics.get(key) is not None
    ]


def render_card(config: dict, evaluation: dict, training: dict | None, *, model_name: str, repo_id: str | None,
                dtype: str, data_description: str | None, license: str, license_name: str, notes: str | None = None,
                license_link: str | None = None,
                dataset_name: str | None = None, leave_one_out: dict | None = None, template: Path = TEMPLATE,
                local_ref: str | None = None, generalisation: str | None = None,
                faithfulness: dict | None = None, test: dict | None = None) -> ModelCard:
    """README.md: front matter (library, task, licence, model-index) + the template filled from the files."""
    dataset = evaluation.get("dataset", "unknown")
    args = (training or {}).get("args") or {}
    card_data = ModelCardData(
        model_name=model_name, library_name="timm", pipeline_tag="image-classification",
        license=license, license_name=license_name if license == "other" else None,
        license_link=license_link if license == "other" else None,
        base_model=base_model(args), datasets=[args["dataset"]] if is_hub_id(args.get("dataset")) else None,
        tags=["image-classification", "timm", "deepfake-detection", "faces"],
        metrics=[metric_type for metric_type, _ in CARD_METRICS.values()],
        eval_results=eval_results(evaluation, dataset_name=dataset_name or Path(dataset).name or dataset),
    )
    metrics = evaluation["metrics"]
    size = config["pretrained_cfg"]["input_size"][-1]
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=model_name,
        model_ref=f"hf-hub:{repo_id}" if repo_id else f"local-dir:{local_ref or model_name}",
        img_size=size,
        architecture=config["architecture"],
        label_names=config["label_names"],
        dtype=dtype,
        preprocessing=config["pretrained_cfg"],
        data_description=(data_description or "").strip() or None,
        notes=(notes or "").strip() or None,
        generalisation=(generalisation or "").strip() or None,
        training_args=(training or {}).get("args"),
        split_text=split_text(training["args"]) if training else None,
        count_rows=count_rows(training["data"]) if training and training.get("data") else None,
        recipe_rows=recipe_rows(training) if training else None,
        averaged=averaged_text(training),
        evaluation=evaluation,
        same_split=same_split(evaluation, training),
        same_data=bool(training) and evaluation.get("dataset") == training["args"]["dataset"],
        augmented=bool(training) and training["args"]["aug_strength"] > 0,
        metric_rows=[(name, fmt(metrics.get(key))) for key, (_, name) in CARD_METRICS.items()],
        confusion=metrics["confusion_matrix"],
        source_rows=source_rows(evaluation["per_source"]) if evaluation.get("per_source") else None,
        calibration=evaluation.get("calibration"),
        storage_dtype=evaluation.get("storage_dtype"),
        calibrated_rows=[(name, fmt(evaluation["calibration"]["metrics_at_threshold"].get(key)))
                         for key, (_, name) in CARD_METRICS.items()] if evaluation.get("calibration") else None,
        robustness=evaluation.get("robustness"),
        robustness_at_threshold=evaluation.get("robustness_at_threshold"),
        leave_one_out=leave_one_out_table(leave_one_out["rows"], leave_one_out["train_arguments"]) if leave_one_out else None,
        license_id=license,
        license_title=license_name if license == "other" else license,
        license_link=license_link,
        default_face_margin=DEFAULT_MARGIN,
        cam=cam_text(config.get("cam_stage"), faithfulness),
        test=test,
        test_rows=[(name, fmt(test["at_threshold"].get(key))) for key, (_, name) in CARD_METRICS.items()] if test else None,
        test_source_rows=source_rows(test["per_source"]) if test and test.get("per_source") else None,
        undefined=UNDEFINED,
    )


def cam_text(stage: int | None, faithfulness: dict | None) -> str | None:
    """Which heat map the detector draws for these weights, and the measurement that chose it."""
    if stage is None or faithfulness is None:
        return None
    other = -1 if stage == -2 else -2
    name = {-1: "the last feature map (stride 32)", -2: "the stage before the last (stride 16, a finer grid)"}
    drop = lambda s: faithfulness[f"stage{s}_top10pct_drop_over_random"]
    return (f"The detector draws the Grad-CAM of {name[stage]} for these weights: blurring the 10% of pixels it ranks "
            f"highest lowered the explained class's probability by {drop(stage):.3f} more than blurring those a random "
            f"map of its grid ranks highest, against {drop(other):.3f} for {name[other]} "
            f"(`benchmarks/cam_faithfulness.py`, {faithfulness.get('images', 'several')} images).")


# --- the folder ---------------------------------------------------------------------------------


def with_pool_size(config: dict, stride: int) -> dict:
    """config.json with `pool_size` true to its input size (runs made before create_model set it say timm's 7×7),
    and without what timm says of its own ImageNet weights (runs continued with --init-from before 2026-12-07 carry
    timm's tag and licence); `stride`: the model's `feature_stride`."""
    if "pretrained_cfg" not in config:
        return config
    cfg = {key: value for key, value in config["pretrained_cfg"].items() if key not in NOT_OUR_WEIGHTS}
    if "input_size" in cfg:
        cfg["pool_size"] = list(pool_size(cfg["input_size"], stride))
    return {**config, "pretrained_cfg": cfg}


# How people would call the shared data's sources of good real photos (the app quotes these names).
REAL_SOURCE_NAMES = {"london_studio": "studio portraits", "celebrity_photos": "press photos",
                     "ffhq_sample": "FFHQ Flickr portraits", "pixabay_portraits": "stock portraits"}


def with_unseen_reals(config: dict, leave_one_out: dict | None) -> dict:
    """config.json plus, from a leave-one-source-out table, the share of each held-out source of real photos that
    its row's model called fake with face search at its own threshold: what the app tells people about good photos
    of kinds a model never saw."""
    rates = {}
    for source, report in ((leave_one_out or {}).get("rows") or {}).items():
        cell = ((report.get("face_search") or {}).get("per_source") or {}).get(source)
        if cell and cell.get("n_fake") == 0 and cell.get("fpr") is not None:
            rates[REAL_SOURCE_NAMES.get(source, source)] = cell["fpr"]
    if not rates:
        return config
    return {**config, "unseen_reals_called_fake": rates}


def with_cam_stage(config: dict, faithfulness: dict | None) -> dict:
    """The heat map's stage, from benchmarks.cam_faithfulness on these weights: the finer map (stage -2, stride 16)
    where blurring the 10% of pixels it ranks highest lowers the explained class's probability at least as much,
    over a random map of its grid, as the last stage's map does; else the last stage (-1)."""
    if faithfulness is None:
        return config
    try:
        drop = {stage: float(faithfulness[f"stage{stage}_top10pct_drop_over_random"]) for stage in CAM_STAGES}
    except (KeyError, TypeError, ValueError) as err:
        raise DetectorError(f"the CAM faithfulness report holds no {err}: pass the JSON benchmarks.cam_faithfulness "
                            "--output wrote for these weights.") from err
    return {**config, "cam_stage": -2 if drop[-2] >= drop[-1] else -1}


def with_calibration(config: dict, evaluation: dict) -> dict:
    """config.json plus the calibration map and thresholds training.evaluate --calibrate fitted, which the detector applies."""
    fitted = evaluation.get("calibration")
    if not fitted:
        return config
    keys = ("temperature", WEIGHTS_KEY, "bias", "threshold", "target_fpr", "lower_threshold", "target_fake_miss", "face_margin",
            "target_fpr_per_source", "min_source_reals", "pooled_fpr_cap", "fpr_all_reals", "fpr_by_source",
            "fakes_caught", "precision", "scores")
    return {**config, "calibration": {**{key: fitted[key] for key in keys if key in fitted},
                                      "storage_dtype": evaluation["storage_dtype"]}}


def check_evaluation(evaluation: dict, metrics: Path, storage_dtype: str) -> None:
    """Refuse an evaluation whose numbers are not those of the folder being written: a calibration fitted on scores
    already through a calibration map (publish applies the map to raw logits), or weights scored in another dtype
    than the one stored (a threshold fitted on float32 weights, float16 ones shipped)."""
    fitted = evaluation.get("calibration")
    if fitted and fitted.get("scores") != RAW_SCORES:
        raise DetectorError(f"{metrics}: its calibration does not record that it was fitted on the model's raw scores "
                            "(an evaluation before 2026-12-07 fitted it on scores already calibrated): run "
                            "training.evaluate --calibrate again.")
    scored = evaluation.get("storage_dtype")
    if scored != storage_dtype:
        flag = " --as-published float16" if storage_dtype == "float16" else ""
        raise DetectorError(f"{metrics} measured {scored or 'unrecorded'} weights, and this folder will store "
                            f"{storage_dtype} ones: run training.evaluate{flag} on the weights as published, so the "
                            "card's and the config's numbers are the shipped file's.")


def check_test_evaluation(test: dict, path: Path, evaluation: dict, storage_dtype: str) -> None:
    """The test-split report must be of these weights as published: the test split, scored with the calibration and
    thresholds this folder stores, in its storage dtype, the way its validation numbers were scored."""
    if test.get("split") != "test":
        raise DetectorError(f"{path} scored the {test.get('split')!r} split: give the report of "
                            "`python -m training.evaluate --split test` on the published folder")
    calibration, served = evaluation.get("calibration") or {}, test.get("served") or {}
    for key in ("threshold", "lower_threshold"):
        if key in calibration and (served.get(key) is None or abs(served[key] - calibration[key]) > 1e-9):
            raise DetectorError(f"{path} was scored at a {key.replace('_', ' ')} of {served.get(key)}, but this folder "
                                f"stores {calibration[key]}: publish without --test-metrics, evaluate that folder "
                                "on the test split, then publish again with its report")
    if test.get("storage_dtype") != storage_dtype:
        raise DetectorError(f"{path} measured {test.get('storage_dtype') or 'unrecorded'} weights, and this folder "
                            f"will store {storage_dtype}: evaluate the published folder")
    if bool(test.get("faces")) != bool(evaluation.get("faces")) or test.get("face_margin") != evaluation.get("face_margin"):
        raise DetectorError(f"{path} scored {'with' if test.get('faces') else 'without'} face search (margin "
                            f"{test.get('face_margin')}), the calibration was fitted {'with' if evaluation.get('faces') else 'without'} "
                            f"it (margin {evaluation.get('face_margin')}): score both the same way")


def build_folder(model: Path, metrics: Path, output: Path, *, fp16: bool = False, data_description: Path | None = None,
                 notes: Path | None = None, leave_one_out: list[Path] | None = None, generalisation: Path | None = None,
                 model_name: str | None = None, dataset_name: str | None = None, repo_id: str | None = None,
                 license: str = "other", license_name: str = "research-only-non-commercial",
                 license_file: Path | None = None, template: Path = TEMPLATE,
                 cam_faithfulness: Path | None = None, test_metrics: Path | None = None) -> Path:
    """Write config.json, model.safetensors and README.md (and LICENSE.md) to `output`, atomically; check the result
    loads. A licence of "other" needs `license_file`: the Hub shows license_name with a link to its text."""
    model, output = Path(model), Path(output)
    config = read_config(model)  # refuses folders the detector could not serve
    if not (model / WEIGHTS_FILE).is_file():
        raise DetectorError(f"{model} has no {WEIGHTS_FILE}: publish a folder written by training.train.")
    evaluation = read_json(metrics)
    if evaluation is None:
        raise DetectorError(f"{metrics} not found: run training.evaluate first; the card quotes its numbers.")
    storage_dtype = "float16" if fp16 else stored_dtype(model)
    check_evaluation(evaluation, Path(metrics), storage_dtype)
    test = read_json(test_metrics) if test_metrics else None
    if test_metrics and test is None:
        raise DetectorError(f"{test_metrics} not found: run training.evaluate --split test on the published folder.")
    if test is not None:
        check_test_evaluation(test, Path(test_metrics), evaluation, storage_dtype)
    training = read_json(model / TRAINING_FILE)
    description = Path(data_description).read_text() if data_description else None
    notes_text = Path(notes).read_text() if notes else None
    faithfulness = read_json(cam_faithfulness) if cam_faithfulness else None
    if cam_faithfulness and faithfulness is None:
        raise DetectorError(f"{cam_faithfulness} not found: run benchmarks.cam_faithfulness --model on these weights.")
    cross_source = None
    if leave_one_out:
        reports = []
        for path in leave_one_out:
            report = read_json(path)
            if report is None:
                raise DetectorError(f"{path} not found: run training.leave_one_out first.")
            reports.append(report)
        cross_source = merged_reports(reports)
    if license == "other" and not (license_file and Path(license_file).is_file()):
        raise DetectorError(f"A licence of 'other' needs its text: pass --license-file (a Markdown file, published as "
                            f"{LICENSE_FILE}){f'; {license_file} was not found' if license_file else ''}, or name a Hub "
                            "licence id with --license.")

    with staged_folder(output) as staging:
        stride = feature_stride(load_model(model).model)
        config = with_unseen_reals(with_calibration(with_pool_size(config, stride), evaluation), cross_source)
        config = with_cam_stage(config, faithfulness)
        if training and training.get("data"):  # how many photos the weights learned from, which the page states
            config["training_images"] = training["data"]["train"]["n"]
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        dtype = write_weights(model / WEIGHTS_FILE, staging / WEIGHTS_FILE, fp16)
        if license == "other":
            shutil.copyfile(license_file, staging / LICENSE_FILE)
        card = render_card(config, evaluation, training, model_name=model_name or output.name, repo_id=repo_id,
                           dtype=dtype, data_description=description, license=license, license_name=license_name,
                           license_link=LICENSE_FILE if license == "other" else None, notes=notes_text, leave_one_out=cross_source,
                           dataset_name=dataset_name, template=Path(template), local_ref=str(output),
                           generalisation=Path(generalisation).read_text() if generalisation else None,
                           faithfulness=faithfulness, test=test)
        card.save(staging / "README.md")
        load_model(staging)  # what we publish must load in the detector as it is
    return output


def push(folder: Path, repo_id: str, api=None, private: bool = False) -> str:
    """Create the Hub repo if needed and upload the model folder's Hub files (never a pickle); returns the commit URL.

    `api` is an `HfApi`-like object (tests pass a fake); by default one is made with the token in $HF_TOKEN.
    """
    folder = Path(folder)
    pickles = sorted(path.name for path in folder.iterdir() if path.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise DetectorError(f"{folder} holds pickle files {pickles}: only safetensors weights are published.")
    missing = [name for name in HUB_FILES if not (folder / name).is_file()]
    if missing:
        raise DetectorError(f"{folder} lacks {missing}: build it with training.publish first.")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=os.environ.get("HF_TOKEN"))
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder),
                               allow_patterns=[*HUB_FILES, LICENSE_FILE],
                               commit_message="Upload deepfake detector (safetensors, config, model card)")
    return str(getattr(commit, "commit_url", commit))


def main(argv=None) -> Path:
    args = parse_args(argv)
    configure_logging()
    folder = build_folder(
        Path(args.model), Path(args.metrics), Path(args.output_dir), fp16=args.fp16,
        data_description=Path(args.data_description) if args.data_description else None,
        notes=Path(args.notes) if args.notes else None,
        leave_one_out=[Path(path) for path in args.leave_one_out] if args.leave_one_out else None,
        generalisation=Path(args.generalisation) if args.generalisation else None,
        model_name=args.model_name, dataset_name=args.dataset_name, repo_id=args.repo_id or args.push,
        license=args.license, license_name=args.license_name,
        license_file=Path(args.license_file) if args.license_file else None, template=Path(args.template),
        cam_faithfulness=Path(args.cam_faithfulness) if args.cam_faithfulness else None,
        test_metrics=Path(args.test_metrics) if args.test_metrics else None,
    )
    logger.info("wrote %s: %s", folder, ", ".join(sorted(path.name for path in folder.iterdir())))
    if args.push:
        logger.info("pushed to %s: %s", args.push, push(folder, args.push, private=args.private))
    return folder


if __name__ == "__main__":
    run_cli(main)
