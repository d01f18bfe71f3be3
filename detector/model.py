"""Create the two-class timm model and load it from a Hub-layout folder or a Hub id.

A model is always a folder: config.json + model.safetensors (+ README.md). A Hub id is
resolved to such a folder in the Hub cache first, so one loader serves every source.
Weights are read with safetensors only; nothing is ever unpickled.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file

from .atomic import sync_directory, sync_tree
from .calibration import WEIGHTS_KEY
from .errors import DetectorError
from .explain import CAM_STAGES
from .faces import DEFAULT_MARGIN, MAX_MARGIN

LABEL_NAMES = ("real", "fake")
# What Detector(precision=...) takes: "auto" (as the threshold was fitted, bf16 only where native), or a dtype
PRECISIONS = ("auto", "fp32", "bf16")
WEIGHTS_FILE = "model.safetensors"
HUB_FILES = ["config.json", WEIGHTS_FILE, "README.md"]
LICENSE_FILE = "LICENSE.md"  # published next to them when the licence is "other" (the card's license_link names it)
PICKLE_FILES = ("pytorch_model.bin", "model.pth", "model.pt", "model.ckpt")
BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "models" / "deepfake-detector"
# What timm's pretrained_cfg says of timm's own ImageNet weights, not of a detector's: overlaid with None (which is
# not exported) wherever a detector's model is built, so a config never names a tag or licence of weights it lacks.
NOT_OUR_WEIGHTS = {"test_input_size": None, "test_crop_pct": None, "tag": None, "origin_url": None, "paper_ids": None,
                   "license": None}


def create_model(architecture: str, pretrained: bool = False, img_size: int | None = None, **kwargs) -> torch.nn.Module:
    """A fresh timm CNN `architecture` (e.g. mobilenetv2_100, resnext50_32x4d) with a two-class head labelled (real, fake)."""
    overlay = {**NOT_OUR_WEIGHTS, "label_names": list(LABEL_NAMES), "crop_pct": 1.0}
    if img_size:
        overlay["input_size"] = (3, img_size, img_size)
    model = timm.create_model(
        architecture, pretrained=pretrained, num_classes=len(LABEL_NAMES), pretrained_cfg_overlay=overlay, **kwargs
    )
    if img_size:
        model.pretrained_cfg["pool_size"] = pool_size((3, img_size, img_size), feature_stride(model))
    return model


def feature_stride(model: torch.nn.Module) -> int:
    """The last feature map's total down-sampling (32 for ResNeXt-50 and MobileNetV2), from timm's feature_info."""
    return int(model.feature_info[-1]["reduction"])


def conv_bn_pairs(model: torch.nn.Module) -> list[tuple[str, torch.nn.Conv2d, str, torch.nn.BatchNorm2d]]:
    """(conv name, conv, BN name, BN) for every batch norm whose input is a convolution's output, in the order the
    forward runs them (traced on a small input, so modules registered out of order, as MobileNet's projection conv
    before its squeeze-excitation slot, pair correctly). Folding (serving) and un-folding (ImageNet import) use it."""
    names = {module: name for name, module in model.named_modules()}
    # id of a conv's output → (that conv, the output): holding the tensor keeps its id from being reused by a later one
    outputs: dict[int, tuple[torch.nn.Module, torch.Tensor]] = {}
    pairs = []

    def trace(module, inputs, output):
        if isinstance(module, torch.nn.BatchNorm2d):
            conv, output = outputs.get(id(inputs[0]), (None, None))
            if conv is not None and output is inputs[0] and conv.out_channels == module.num_features:
                pairs.append((names[conv], conv, names[module], module))
        else:
            outputs[id(output)] = (module, output)

    handles = [module.register_forward_hook(trace) for module in model.modules()
               if isinstance(module, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    parameter = next(model.parameters())
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, 64, 64, dtype=parameter.dtype, device=parameter.device))
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return pairs


def replace_folder(staging: Path, target: Path) -> None:
    """Put the finished folder `staging` at `target`, replacing what was there, so that `target` is never missing
    nor half-written: on Linux the two are swapped in one step (renameat2 RENAME_EXCHANGE) and the old one is then
    deleted; elsewhere the old folder is moved aside first, and `restore_folder` brings it back after a crash.
    After a power loss too: every file of `staging` is fsynced before the swap, and the folder holding `target`
    after it, before the old folder is deleted (detector/atomic.py).
    Every model folder the project writes goes through here, by way of `staged_folder`."""
    staging, target = Path(staging), Path(target)
    aside = target.with_name(f".{target.name}-old")
    if aside.exists():
        shutil.rmtree(aside)
    sync_tree(staging)
    if not target.exists():
        staging.rename(target)
        sync_directory(target.parent)
    elif _exchange(staging, target):  # staging now holds the old folder
        sync_directory(target.parent)
        shutil.rmtree(staging)
    else:
        target.rename(aside)
        staging.rename(target)
        sync_directory(target.parent)
        shutil.rmtree(aside)


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike):
    """Yield an empty folder beside `target` to write into; when the block ends without an error it replaces
    `target` (`replace_folder`), and whatever happens no staging folder is left behind. Training's best/, averaged
    models and published model folders are all written this way. The folder put in place is readable by all
    (0755, its files 0644), as any copied model folder is: mkdtemp and safetensors create owner-only modes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-staging-"))
    try:
        yield staging
        for path in staging.iterdir():
            path.chmod(0o755 if path.is_dir() else 0o644)
        staging.chmod(0o755)
        replace_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def restore_folder(target: Path) -> None:
    """After a crash inside `replace_folder`'s fallback: the folder moved aside goes back where it was."""
    target = Path(target)
    aside = target.with_name(f".{target.name}-old")
    if aside.is_dir() and not target.exists():
        aside.rename(target)
        sync_directory(target.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 with RENAME_EXCHANGE); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def pool_size(input_size, stride: int) -> tuple[int, int]:
    """The last feature map's size at `input_size` (`stride`: `feature_stride(model)`): timm's `pool_size`, and the
    Grad-CAM grid."""
    return (max(1, math.ceil(input_size[-2] / stride)), max(1, math.ceil(input_size[-1] / stride)))


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    config: dict
    folder: Path
    source: str

    @property
    def label_names(self) -> list[str]:
        return list(self.config["label_names"])


def hub_revision(folder: str | os.PathLike) -> str | None:
    """The Hub commit of a model folder that is a Hub cache snapshot (…/snapshots/<commit>), else None."""
    folder = Path(folder).resolve()
    return folder.name if folder.parent.name == "snapshots" else None


def weights_sha256(folder: str | os.PathLike) -> str | None:
    """The sha256 of a model folder's weights file (None when it has none), computed once per file version."""
    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        return None
    stat = weights.stat()
    return _file_sha256(str(weights.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime key the cache: a new file, a new hash
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_source() -> str:
    """`DETECTOR_MODEL` when set, else the bundled model folder."""
    return os.environ.get("DETECTOR_MODEL") or str(BUNDLED_MODEL)


def is_hub_id(name: str | None) -> bool:
    """The Hub-id/folder rule: `hf-hub:owner/name`, or an `owner/name` that is no local path (nor `./`, `/`, `local-dir:`)."""
    if not name:
        return False
    if name.startswith("hf-hub:"):
        return True
    return name.count("/") == 1 and not Path(name).expanduser().exists() and not name.startswith((".", "/", "local-dir:"))


def resolve_folder(source: str) -> Path:
    """Turn a local folder (`local-dir:path` or a plain path), `hf-hub:owner/name` or `owner/name` into a local
    Hub-layout folder. The prefixes are timm's: `timm.create_model(source, pretrained=True)` reads the same names."""
    path = Path(source.removeprefix("local-dir:")).expanduser()
    restore_folder(path)  # a replacement that crashed half-way leaves the old folder beside it
    if path.is_dir():
        return path
    if source.startswith("local-dir:"):
        raise DetectorError(f"Model folder not found: {path}. Pass a folder with config.json and {WEIGHTS_FILE}.")
    repo_id = source.removeprefix("hf-hub:")
    if is_hub_id(source):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
            raise DetectorError(
                f"Could not get model '{repo_id}' from the Hugging Face Hub ({type(err).__name__}). "
                "Check the id and your connection, or pass a local model folder."
            ) from err
    raise DetectorError(f"Model folder not found: {source}. Pass a folder with config.json and {WEIGHTS_FILE}, or a Hub id.")


def read_config(folder: Path) -> dict:
    """Read and validate config.json: a timm architecture and the two labels we know how to serve."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise DetectorError(f"{folder} has no config.json: not a model folder in the Hub layout.")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DetectorError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise DetectorError(f"{config_path} must hold a JSON object.")
    architecture = config.get("architecture")
    if not isinstance(architecture, str) or not timm.is_model(architecture):
        raise DetectorError(f"{config_path}: unknown architecture {architecture!r}; name a timm CNN such as "
                            f"mobilenetv2_100 or resnext50_32x4d (timm {timm.__version__}).")
    labels = config.get("label_names")
    if config.get("num_classes") != len(LABEL_NAMES) or not isinstance(labels, list) or sorted(labels) != sorted(LABEL_NAMES):
        raise DetectorError(
            f"{config_path}: expected 2 classes named {list(LABEL_NAMES)}, found num_classes="
            f"{config.get('num_classes')!r} and label_names={labels!r}."
        )
    for key in ("model_args", "pretrained_cfg"):
        if not isinstance(config.get(key, {}), dict):
            raise DetectorError(f"{config_path}: {key} must be a JSON object, found {config[key]!r}.")
    _check_data_config(config_path, config.get("pretrained_cfg", {}))
    _check_calibration(config_path, config.get("calibration"))
    _check_unseen_reals(config_path, config.get("unseen_reals_called_fake"))
    count = config.get("training_images")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise DetectorError(f"{config_path}: training_images must be a whole number above 0, found {count!r}.")
    stage = config.get("cam_stage")
    if stage is not None and (isinstance(stage, bool) or stage not in CAM_STAGES):
        raise DetectorError(f"{config_path}: cam_stage must be one of {list(CAM_STAGES)} (-1: the last feature map, "
                            f"-2: the finer one before it), found {stage!r}.")
    return config


def _check_unseen_reals(config_path: Path, rates) -> None:
    """{"studio portraits": 0.04, ...}: kinds of real photos a model never trained on, and the share it called fake."""
    if rates is None:
        return
    if not isinstance(rates, dict) or not all(isinstance(k, str) and _number(v) and 0 <= v <= 1 for k, v in rates.items()):
        raise DetectorError(f"{config_path}: unseen_reals_called_fake must map names to shares between 0 and 1, "
                            f"found {rates!r}.")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_calibration(config_path: Path, calibration) -> None:
    """The block training.evaluate --calibrate fits: temperature > 0 or log_prob_weights {"fake", "real"} ≥ 0 (not both
    0; detector/calibration.py), a finite bias, threshold and target_fpr in (0, 1),
    the face margin the threshold was fitted with in [0, MAX_MARGIN], whether target_fpr is a mean over sources of real
    images, the share of all reals it then flags and the share of fakes it caught, each or absent."""
    if calibration is None:
        return
    if not isinstance(calibration, dict):
        raise DetectorError(f"{config_path}: calibration must be a JSON object, found {calibration!r}. "
                            "Remove it or re-run training.evaluate --calibrate and training.publish.")
    temperature = calibration.get("temperature", 1.0)
    if not _number(temperature) or temperature <= 0:
        raise DetectorError(f"{config_path}: calibration.temperature must be a number above 0, found {temperature!r}.")
    if WEIGHTS_KEY in calibration:
        weights = calibration[WEIGHTS_KEY]
        ok = (isinstance(weights, dict) and set(weights) == {"fake", "real"}
              and all(_number(w) and 0 <= w <= 100 for w in weights.values()) and any(weights.values()))
        if not ok or "temperature" in calibration:
            raise DetectorError(f"{config_path}: calibration.{WEIGHTS_KEY} must be {{\"fake\": a, \"real\": b}} with "
                                f"numbers from 0 to 100, not both 0, and no temperature beside it; found {weights!r}.")
    bias = calibration.get("bias", 0.0)
    if not _number(bias) or abs(bias) > 50:
        raise DetectorError(f"{config_path}: calibration.bias must be a number (a logit, |bias| ≤ 50), found {bias!r}.")
    margin = calibration.get("face_margin", DEFAULT_MARGIN)
    if not _number(margin) or not 0 <= margin <= MAX_MARGIN:
        raise DetectorError(f"{config_path}: calibration.face_margin must be a number from 0 to {MAX_MARGIN} (a fraction of "
                            f"the face's side), found {margin!r}.")
    for key in ("threshold", "target_fpr", "lower_threshold", "target_fake_miss"):
        value = calibration.get(key)
        if value is not None and (not _number(value) or not 0 < value < 1):
            raise DetectorError(f"{config_path}: calibration.{key} must be a number between 0 and 1, found {value!r}.")
    lower, upper = calibration.get("lower_threshold"), calibration.get("threshold")
    if lower is not None and (upper is None or lower > upper):
        raise DetectorError(f"{config_path}: calibration.lower_threshold ({lower!r}) needs a threshold at or above it, "
                            f"found {upper!r}.")
    per_source = calibration.get("target_fpr_per_source", False)
    if not isinstance(per_source, bool):
        raise DetectorError(f"{config_path}: calibration.target_fpr_per_source must be true or false, found {per_source!r}.")
    for key in ("fpr_all_reals", "fakes_caught"):
        share = calibration.get(key)
        if share is not None and (not _number(share) or not 0 <= share <= 1):
            raise DetectorError(f"{config_path}: calibration.{key} must be a share from 0 to 1, found {share!r}.")


def _check_data_config(config_path: Path, cfg: dict) -> None:
    """The preprocessing values the detector uses: input size, mean/std, crop_pct (when given)."""
    def numbers(value, count: int) -> bool:
        return isinstance(value, list) and len(value) == count and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)

    size = cfg.get("input_size", [3, 224, 224])
    if not numbers(size, 3) or size[0] != 3 or not all(isinstance(v, int) and 16 <= v <= 2048 for v in size[1:]):
        raise DetectorError(f"{config_path}: pretrained_cfg.input_size must be [3, height, width] with sides of "
                            f"16 to 2048 pixels, found {size!r}.")
    for key in ("mean", "std"):
        if key in cfg and (not numbers(cfg[key], 3) or (key == "std" and min(cfg[key]) <= 0)):
            raise DetectorError(f"{config_path}: pretrained_cfg.{key} must be 3 numbers (one per RGB channel"
                                f"{', each above 0' if key == 'std' else ''}), found {cfg[key]!r}.")
    crop_pct = cfg.get("crop_pct", 1.0)
    if not isinstance(crop_pct, (int, float)) or isinstance(crop_pct, bool) or not 0 < crop_pct <= 2:
        raise DetectorError(f"{config_path}: pretrained_cfg.crop_pct must be a number in (0, 2], found {crop_pct!r}.")


STORAGE_DTYPES = ("float32", "float16")  # how a model folder may store its floating weights (training.publish --fp16)


def stored_dtype(folder: str | os.PathLike) -> str:
    """The dtype a model folder's weights file stores its floating tensors in ("float16" or "float32")."""
    from safetensors import safe_open

    with safe_open(str(Path(folder) / WEIGHTS_FILE), framework="pt") as weights:
        for name in weights.keys():
            tensor = weights.get_slice(name)
            dtype = tensor.get_dtype()
            if dtype in ("F16", "BF16", "F32", "F64"):
                return {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}[dtype]
    return "float32"


def load_model(source: str | os.PathLike | None = None) -> LoadedModel:
    """Load a model folder or Hub id (default: `default_source()`), ready for inference."""
    source = str(source or default_source())
    folder = resolve_folder(source)
    config = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        pickles = [name for name in PICKLE_FILES if (folder / name).exists()]
        hint = f" It holds {pickles[0]}, a pickle file, which is refused for safety: convert it to safetensors." if pickles else ""
        raise DetectorError(f"{folder} has no {WEIGHTS_FILE}.{hint}")
    model_args = {**config.get("model_args", {}), "num_classes": len(LABEL_NAMES)}
    architecture = config["architecture"]
    try:
        model = timm.create_model(
            architecture,
            pretrained=False,
            pretrained_cfg_overlay={**config.get("pretrained_cfg", {}), **NOT_OUR_WEIGHTS,  # last: even where a
                                    "label_names": config["label_names"]},  # config carries them, they are not ours
            **model_args,
        )
    except (TypeError, ValueError, KeyError) as err:  # e.g. an option this architecture does not take
        raise DetectorError(f"{folder / 'config.json'}: model_args cannot build {architecture}: {err}") from err
    _check_servable(folder / "config.json", architecture, model)
    try:
        state_dict = load_file(str(weights))
        model.load_state_dict(state_dict, strict=True)
    except Exception as err:  # safetensors raises its own types; all mean "bad weights file"
        raise DetectorError(f"{weights} could not be loaded as {architecture} weights, the architecture "
                            f"{folder / 'config.json'} names: {err}") from err
    model.eval()
    return LoadedModel(model=model, config=config, folder=folder, source=source)


def _check_servable(config_path: Path, architecture: str, model: torch.nn.Module) -> None:
    """The detector serves CNNs: `forward_features` gives a feature map [N, C, h, w] that `forward_head` pools and
    classifies, and `feature_info` names the stages (Grad-CAM at stage -1 or -2)."""
    info = getattr(model, "feature_info", None)
    ok = hasattr(model, "forward_head") and isinstance(info, list) and len(info) >= 2
    if ok:
        try:
            with torch.no_grad():
                ok = model.eval().forward_features(torch.zeros(1, 3, 64, 64)).ndim == 4
        except Exception:  # a fixed-size transformer refuses the small probe: not a CNN either
            ok = False
    if not ok:
        raise DetectorError(f"{config_path}: unsupported architecture {architecture!r}; this detector serves timm CNNs "
                            "whose features are a map (mobilenetv2_100, resnext50_32x4d, ...).")
