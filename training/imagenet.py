"""ImageNet weights for a timm model: timm's own from the Hub, or a TFLite classification file read offline.

    # timm's weights (needs the Hub)
    model = imagenet_model("resnext50_32x4d", pretrained=True)
    # a TFLite file (../shared/pretrained/tf2_mobilenet_v2_1.0_224_ptq.tflite), batch norm un-folded on real photos
    model = imagenet_model("mobilenetv2_100", pretrained_file=path, photos=batches)

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
"""
from __future__ import annotations

import logging
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


class TfliteMismatch(DetectorError):
    """A TFLite file that cannot be read, or that does not fit the model: the message names the first mismatch."""


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
    """A timm model with ImageNet weights: timm's own (`pretrained`, from the Hub) or a TFLite file's (`pretrained_file`,
    whose preprocessing, [-1, 1] input and "same" padding, the model then carries in its config). Neither: random
    weights. `num_classes` None: the detector's two classes (`create_model`); else a plain timm model (1000: ImageNet)."""
    if pretrained and pretrained_file:
        raise ValueError("pass pretrained or pretrained_file, not both")
    kwargs = {"pad_type": TFLITE_PAD_TYPE} if pretrained_file else {}
    try:
        if num_classes is None:
            model = create_model(architecture, pretrained=pretrained, img_size=img_size, **kwargs)
        else:
            model = timm.create_model(architecture, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except TypeError as err:  # an architecture without TF's padding option (timm's ResNets) cannot hold TF's weights
        if not pretrained_file:
            raise
        raise TfliteMismatch(f"{architecture} cannot be built with TF's \"same\" padding ({err}), so it cannot take the "
                             f"weights of {pretrained_file}: choose the architecture the file was made for "
                             "(mobilenetv2_100 for ../shared/pretrained/tf2_mobilenet_v2_1.0_224_ptq.tflite)") from err
    if num_classes is None and not pretrained_file:  # (load_tflite starts it itself, after reading the file)
        start_near_half(model)
    if pretrained_file:
        model.pretrained_cfg = {**model.pretrained_cfg, "mean": TFLITE_MEAN_STD, "std": TFLITE_MEAN_STD}
        if photos is None:
            raise ValueError("pretrained_file needs photos for the batch-norm statistics")
        load_tflite(model, pretrained_file, photos(model) if callable(photos) else photos)
    return model
