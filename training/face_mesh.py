"""MediaPipe's Face Mesh (468 facial landmarks) in PyTorch, read from its TFLite file; a landmark cache for training.

    mesh = FaceMesh.from_tflite("../shared/pretrained/face_landmark/face_landmark.tflite")
    found = face_landmarks(mesh, image)           # Landmarks: 468 (x, y, z) in image pixels, face score; or None
    cache = LandmarkCache.build("landmarks.npz", items, mesh_path)   # once per training set; reused after

The network (`face_landmark.tflite`, Apache-2.0, fp16 weights) is a stack of 3×3 depthwise and 1×1 convolutions
with PReLU activations, residual ADDs, 2×2 max pools with channel padding (PAD) on the shortcut, and two heads: 1404
numbers (468 × x, y, z in the 192×192 crop's pixels) and one face-presence logit. `FaceMesh` is built from the
graph's own op list and runs it in order in NCHW: each TFLite op maps onto one torch op (TF's "same" padding is
padded explicitly, bottom/right first), and a file holding an op it does not know is refused, naming the op.

The crop: the face finder's first box (`detector.faces.find_faces`), made square on its long side and grown by
`CROP_SCALE`; a second pass then crops again around the first pass's landmarks, rotated so that the eyes lie level,
as MediaPipe tracks a face from one frame to the next. Face Mesh is a training input only: the product never
imports this module, and code that needs the file takes its path and says where to get it when it is missing.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from detector.atomic import atomic_path
from detector.errors import DetectorError
from detector.faces import find_faces

logger = logging.getLogger(__name__)

DEFAULT_PATH = Path(__file__).resolve().parent.parent.parent / "shared" / "pretrained" / "face_landmark" / "face_landmark.tflite"
INPUT_SIDE = 192  # the network's input: a 192×192 RGB crop, values in [0, 1]
CROP_SCALE = 1.25  # the square crop's side over the face box's long side (on 40 shared photos of 8 real sources:
# eyes, nose and mouth in place on all 40 at 1.25 and at MediaPipe's 1.5, mirror consistency a little better at 1.25)
REFINE_SCALE = 1.5  # the second pass: the first pass's landmark box, squared and grown as MediaPipe's tracking does
FACE_THRESHOLD = 0.5  # face-presence probability below which no landmarks are returned

# Landmark indices (MediaPipe's canonical face mesh). FACE_OVAL runs round the face from the top of the forehead,
# clockwise in the image (down the subject's left cheek first, which lies on the image's right).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176,
             149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)  # the subject's right: image left
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
NOSE_TIP = 1
MOUTH = (13, 14, 78, 308)  # inner lips top, bottom; mouth corners right, left
BROWS = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276)


class FaceMeshError(DetectorError):
    """The Face Mesh file is missing, unreadable or holds an op this port does not run."""


def missing_file_message(path: str | Path) -> str:
    return (f"Face Mesh weights not found at {path}: landmark pseudo-fake masks need MediaPipe's face_landmark.tflite "
            f"(Apache-2.0; ../shared/pretrained/face_landmark/ holds it with its README): pass its path with "
            f"--face-mesh PATH, or train with --pseudo-fake-mask ellipse, which needs no landmarks")


# ---------------------------------------------------------------------------------------------------------------
# Reading the TFLite graph
# ---------------------------------------------------------------------------------------------------------------

def _constant(model, subgraph, index: int) -> np.ndarray | None:
    """A constant tensor as float32 (fp16 widened, int8/uint8 dequantised), or None when it has no data."""
    import tflite

    from .imagenet import _dequantise

    tensor = subgraph.Tensors(index)
    data = model.Buffers(tensor.Buffer()).DataAsNumpy()
    if not isinstance(data, np.ndarray) or data.size == 0:
        return None
    if tensor.Type() == tflite.TensorType.FLOAT16:
        return data.view(np.float16).reshape(tensor.ShapeAsNumpy()).astype(np.float32)
    return _dequantise(model, subgraph, index)


def _options(operator, cls):
    import tflite

    options = getattr(tflite, cls)()
    table = operator.BuiltinOptions()
    options.Init(table.Bytes, table.Pos)
    return options


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF's "same" padding along one axis: (before, after), the extra pixel after."""
    effective = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


ACTIVATIONS = {0: None, 1: F.relu, 3: lambda x: F.relu6(x)}  # TFLite's fused NONE, RELU, RELU6


@dataclass(frozen=True)
class Step:
    """One op of the graph: what it reads and writes (tensor indices), and how."""

    op: str
    inputs: tuple[int, ...]
    output: int
    module: str = ""  # the name of its torch module, when it has weights
    same: bool = False  # TF "same" padding (convolutions and pools)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    activation: int = 0
    pads: tuple[int, ...] = ()  # PAD: F.pad's order, last axis first, over N, C, H, W


class FaceMesh(torch.nn.Module):
    """The TFLite graph as a torch module: forward(N×3×192×192 RGB in [0, 1]) → (N×468×3 landmarks in crop pixels,
    N face-presence logits)."""

    def __init__(self, steps: list[Step], layers: dict[str, torch.nn.Module], input_index: int,
                 output_indices: tuple[int, int]):
        super().__init__()
        self.steps = steps
        self.layers = torch.nn.ModuleDict(layers)
        self.input_index = input_index
        self.output_indices = output_indices

    @classmethod
    def from_tflite(cls, path: str | Path) -> "FaceMesh":
        import tflite

        path = Path(path)
        if not path.is_file():
            raise FaceMeshError(missing_file_message(path))
        try:
            model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
            subgraph = model.Subgraphs(0)
            count = subgraph.OperatorsLength()
        except Exception as err:  # a truncated or foreign file breaks the flatbuffer reader in many ways
            raise FaceMeshError(f"{path} could not be read as a TFLite model ({err}): "
                                f"{missing_file_message(path).split(': ', 1)[1]}") from err
        op_names = {value: name for name, value in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
        constants: dict[int, np.ndarray] = {}
        steps: list[Step] = []
        layers: dict[str, torch.nn.Module] = {}

        def const(index: int) -> np.ndarray:
            if index not in constants:
                value = _constant(model, subgraph, index)
                if value is None:
                    raise FaceMeshError(f"{path}: tensor {subgraph.Tensors(index).Name().decode()!r} should be a "
                                        "constant and has no data: not MediaPipe's face landmark file")
                constants[index] = value
            return constants[index]

        for i in range(count):
            operator = subgraph.Operators(i)
            code = model.OperatorCodes(operator.OpcodeIndex())
            op = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
            ins = [operator.Inputs(j) for j in range(operator.InputsLength())]
            out = operator.Outputs(0)
            name = f"{op.lower()}_{i}"
            if op == "DEQUANTIZE":
                constants[out] = const(ins[0])
            elif op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                weight = const(ins[1])
                channels = weight.shape[0 if op == "CONV_2D" else 3]
                bias = const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else np.zeros(channels, np.float32)
                if op == "CONV_2D":  # [out, kh, kw, in] → [out, in, kh, kw]
                    options = _options(operator, "Conv2DOptions")
                    weight = weight.transpose(0, 3, 1, 2)
                    groups = 1
                else:  # [1, kh, kw, in × multiplier] → [in × multiplier, 1, kh, kw]
                    options = _options(operator, "DepthwiseConv2DOptions")
                    weight = weight.transpose(3, 0, 1, 2)
                    groups = weight.shape[0] // max(1, options.DepthMultiplier())
                if options.DilationHFactor() not in (0, 1) or options.DilationWFactor() not in (0, 1):
                    raise FaceMeshError(f"{path}: dilated convolution (op {i}) is not supported by this port")
                conv = torch.nn.Conv2d(weight.shape[1] * groups, weight.shape[0], weight.shape[2:], groups=groups,
                                       stride=(options.StrideH(), options.StrideW()))
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
                    conv.bias.copy_(torch.from_numpy(bias))
                layers[name] = conv
                steps.append(Step("conv", (ins[0],), out, name, options.Padding() == tflite.Padding.SAME,
                                  tuple(weight.shape[2:]), (options.StrideH(), options.StrideW()),
                                  options.FusedActivationFunction()))
            elif op == "PRELU":
                alpha = const(ins[1]).reshape(-1)
                prelu = torch.nn.PReLU(len(alpha))
                with torch.no_grad():
                    prelu.weight.copy_(torch.from_numpy(alpha))
                layers[name] = prelu
                steps.append(Step("prelu", (ins[0],), out, name))
            elif op == "ADD":
                steps.append(Step("add", tuple(ins), out, activation=_options(operator, "AddOptions").FusedActivationFunction()))
            elif op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
                options = _options(operator, "Pool2DOptions")
                steps.append(Step("max_pool" if op == "MAX_POOL_2D" else "avg_pool", (ins[0],), out, "",
                                  options.Padding() == tflite.Padding.SAME, (options.FilterHeight(), options.FilterWidth()),
                                  (options.StrideH(), options.StrideW()), options.FusedActivationFunction()))
            elif op == "PAD":
                paddings = const(ins[1]).astype(int).reshape(-1, 2)  # NHWC: [[n0, n1], [h0, h1], [w0, w1], [c0, c1]]
                if len(paddings) != 4 or paddings[0].any():
                    raise FaceMeshError(f"{path}: PAD (op {i}) over {len(paddings)} axes is not supported by this port")
                nchw = [paddings[0], paddings[3], paddings[1], paddings[2]]
                steps.append(Step("pad", (ins[0],), out, pads=tuple(int(v) for axis in reversed(nchw) for v in axis)))
            elif op == "RESHAPE":
                steps.append(Step("reshape", (ins[0],), out))
            else:
                raise FaceMeshError(f"{path}: op {i} is {op}, which this port does not run: not MediaPipe's face "
                                    "landmark file")
            if steps and steps[-1].activation not in ACTIVATIONS:
                raise FaceMeshError(f"{path}: op {i} ({op}) has fused activation {steps[-1].activation}, which this "
                                    "port does not run")
        outputs = tuple(subgraph.Outputs(j) for j in range(subgraph.OutputsLength()))
        sizes = [int(np.prod(subgraph.Tensors(j).ShapeAsNumpy())) for j in outputs]
        if sorted(sizes) != [1, 468 * 3]:
            raise FaceMeshError(f"{path}: outputs of {sizes} numbers, not 1404 landmark coordinates and a face flag: "
                                "not MediaPipe's face landmark file")
        landmark_index, flag_index = (outputs if sizes[0] == 1404 else outputs[::-1])
        mesh = cls(steps, layers, subgraph.Inputs(0), (landmark_index, flag_index)).eval()
        logger.info("Face Mesh from %s: %d ops, %d parameters", path, len(steps),
                    sum(p.numel() for p in mesh.parameters()))
        return mesh

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tensors = {self.input_index: x}
        for step in self.steps:
            value = tensors[step.inputs[0]]
            if step.op in ("conv", "max_pool", "avg_pool"):
                if step.same:
                    top, bottom = _same_padding(value.shape[2], step.kernel[0], step.stride[0])
                    left, right = _same_padding(value.shape[3], step.kernel[1], step.stride[1])
                    if top or bottom or left or right:  # TF pads max pools with -inf, average pools count no pad
                        value = F.pad(value, (left, right, top, bottom),
                                      value=float("-inf") if step.op == "max_pool" else 0.0)
                if step.op == "conv":
                    value = self.layers[step.module](value)
                elif step.op == "max_pool":
                    value = F.max_pool2d(value, step.kernel, step.stride)
                else:
                    value = F.avg_pool2d(value, step.kernel, step.stride)
            elif step.op == "prelu":
                value = self.layers[step.module](value)
            elif step.op == "add":
                value = value + tensors[step.inputs[1]]
            elif step.op == "pad":
                value = F.pad(value, step.pads)
            elif step.op == "reshape":  # only ever ahead of an output here: kept as is, flattened below
                pass
            activation = ACTIVATIONS[step.activation]
            tensors[step.output] = activation(value) if activation is not None else value
        landmarks, flag = (tensors[i] for i in self.output_indices)
        return landmarks.reshape(len(x), 468, 3), flag.reshape(len(x))


# ---------------------------------------------------------------------------------------------------------------
# Landmarks on a photo
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Landmarks:
    """468 (x, y, z) in the image's pixels (z in the crop's pixel scale, relative), and the face-presence probability."""

    points: np.ndarray
    score: float


def crop_matrix(centre: tuple[float, float], side: float, angle: float = 0.0) -> np.ndarray:
    """The 2×3 affine that maps the image onto the INPUT_SIDE² crop: a square of `side` pixels about `centre`,
    turned by `angle` radians (the crop's x axis runs along that angle in the image)."""
    scale = INPUT_SIDE / max(side, 1.0)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    cx, cy = centre
    # crop = R(-angle)·scale·(p − centre) + INPUT_SIDE / 2
    return np.array([[cos, sin, INPUT_SIDE / 2 - cos * cx - sin * cy],
                     [-sin, cos, INPUT_SIDE / 2 + sin * cx - cos * cy]], np.float64)


@torch.no_grad()
def run_crops(mesh: FaceMesh, rgb: np.ndarray, matrices: list[np.ndarray]) -> list[Landmarks]:
    """Face Mesh on crops of `rgb` (H×W×3 uint8) given by `matrices` (crop_matrix); landmarks back in image pixels."""
    crops = [cv2.warpAffine(rgb, m, (INPUT_SIDE, INPUT_SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
             for m in matrices]
    batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255.0)
    points, flags = mesh(batch)
    found = []
    for m, crop_points, flag in zip(matrices, points.numpy().astype(np.float64), torch.sigmoid(flags).tolist()):
        inverse = cv2.invertAffineTransform(m)
        xy = crop_points[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        z = crop_points[:, 2:] / math.hypot(m[0, 0], m[0, 1])  # back to image pixels too
        found.append(Landmarks(np.concatenate([xy, z], axis=1).astype(np.float32), float(flag)))
    return found


def face_landmarks(mesh: FaceMesh, image: Image.Image, box: tuple[float, float, float, float] | None = None,
                   refine: bool = True, threshold: float = FACE_THRESHOLD) -> Landmarks | None:
    """The landmarks of the face in `box` (left, top, right, bottom; default: `find_faces`'s first, or the whole
    picture when it finds none), or None when Face Mesh sees no face there (probability below `threshold`)."""
    image = image.convert("RGB")
    if box is None:
        faces = find_faces(image)
        box = face_box(faces[0]) if faces else (0, 0, image.width, image.height)
    left, top, right, bottom = (float(v) for v in box)
    rgb = np.asarray(image)
    side = max(right - left, bottom - top) * (CROP_SCALE if faces_box_is_tight(box, image.size) else 1.0)
    found = run_crops(mesh, rgb, [crop_matrix(((left + right) / 2, (top + bottom) / 2), side)])[0]
    if refine and found.score >= threshold:
        found = run_crops(mesh, rgb, [landmark_roi(found.points)])[0]
    return found if found.score >= threshold else None


def face_box(face) -> tuple[float, float, float, float]:
    """A face finder's face as (left, top, right, bottom): a `Face` with a `.box`, or the box itself."""
    return tuple(float(v) for v in getattr(face, "box", face))


def faces_box_is_tight(box, size) -> bool:
    """A face finder's box (grown by CROP_SCALE), not the whole picture (taken as it is)."""
    left, top, right, bottom = box
    return not (left <= 0 and top <= 0 and right >= size[0] and bottom >= size[1])


def landmark_roi(points: np.ndarray, scale: float = REFINE_SCALE) -> np.ndarray:
    """MediaPipe's next crop from landmarks: their box, turned so that the eyes lie level, squared and grown."""
    right_eye, left_eye = points[list(RIGHT_EYE), :2].mean(axis=0), points[list(LEFT_EYE), :2].mean(axis=0)
    angle = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
    cos, sin = math.cos(angle), math.sin(angle)
    xy = points[:, :2].astype(np.float64)
    centre0 = xy.mean(axis=0)
    rotated = (xy - centre0) @ np.array([[cos, -sin], [sin, cos]])  # into the level frame
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    middle = (low + high) / 2
    centre = centre0 + middle @ np.array([[cos, sin], [-sin, cos]])
    return crop_matrix((float(centre[0]), float(centre[1])), float(max(high - low)) * scale, angle)


# ---------------------------------------------------------------------------------------------------------------
# The landmark cache: computed once per training set
# ---------------------------------------------------------------------------------------------------------------

def fingerprint(image: Image.Image) -> str:
    """The decoded picture's identity (size, mode and pixels): the training pipeline hands pictures, not paths."""
    digest = hashlib.blake2b(f"{image.mode}{image.size}".encode(), digest_size=16)
    digest.update(image.tobytes())
    return digest.hexdigest()


class LandmarkCache:
    """Face-oval-and-more landmarks (468 × x, y in image pixels; NaN where no face was found) per training image,
    in one .npz file keyed by the image's path (or its bytes' hash when it has none), each entry also carrying the
    decoded picture's fingerprint, by which the training pipeline looks it up."""

    def __init__(self, keys: list[str], fingerprints: list[str], points: np.ndarray, path: Path | None = None):
        self.keys, self.fingerprints, self.points, self.path = list(keys), list(fingerprints), points, path
        self._by_key = {key: i for i, key in enumerate(self.keys)}
        self._by_print = {value: i for i, value in enumerate(self.fingerprints)}

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def load(cls, path: str | Path) -> "LandmarkCache":
        path = Path(path)
        if not path.is_file():
            return cls([], [], np.zeros((0, 468, 2), np.float32), path)
        with np.load(path, allow_pickle=False) as data:
            return cls(data["keys"].tolist(), data["fingerprints"].tolist(), data["points"], path)

    def save(self, path: str | Path | None = None) -> None:
        path = Path(path or self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary, temporary.open("wb") as f:  # a file object: savez adds no suffix
            np.savez(f, keys=np.array(self.keys, dtype=str), fingerprints=np.array(self.fingerprints, dtype=str),
                     points=self.points.astype(np.float32))

    def get(self, image: Image.Image) -> np.ndarray | None | bool:
        """The cached landmarks of this picture (468×2), None when it has no face, False when it is not cached."""
        i = self._by_print.get(fingerprint(image))
        if i is None:
            return False
        points = self.points[i]
        return None if np.isnan(points).any() else points

    def get_key(self, key: str) -> np.ndarray | None | bool:
        i = self._by_key.get(key)
        if i is None:
            return False
        return None if np.isnan(self.points[i]).any() else self.points[i]

    @classmethod
    def build(cls, path: str | Path | None, items: Iterable[tuple[str, Callable[[], Image.Image]]],
              mesh: FaceMesh | str | Path = DEFAULT_PATH) -> "LandmarkCache":
        """The cache at `path` (None: in memory only), completed: Face Mesh runs on each (key, open picture) of
        `items` not yet in it, and the file is rewritten when anything was added. `mesh`: the model, or its file
        (read only when needed)."""
        cache = cls.load(path) if path is not None else cls([], [], np.zeros((0, 468, 2), np.float32))
        keys, prints, points = [], [], []
        start = time.perf_counter()
        for key, open_picture in items:
            if key in cache._by_key or key in keys:
                continue
            if not isinstance(mesh, FaceMesh):
                mesh = FaceMesh.from_tflite(mesh)
            picture = open_picture().convert("RGB")
            found = face_landmarks(mesh, picture)
            keys.append(key)
            prints.append(fingerprint(picture))
            points.append(found.points[:, :2] if found is not None else np.full((468, 2), np.nan, np.float32))
            if len(keys) % 500 == 0:
                logger.info("landmarks of %d images computed", len(keys))
        if not keys:
            return cache
        cache = cls(cache.keys + keys, cache.fingerprints + prints,
                    np.concatenate([cache.points, np.stack(points).astype(np.float32)]), path and Path(path))
        if path is not None:
            cache.save()
        seconds = time.perf_counter() - start
        logger.info("landmark cache %s: %d images added in %.1f s (%.1f ms/image: decoding, face finder, two Face Mesh "
                    "passes), %d without a face; %d in all", path or "(in memory)", len(keys), seconds,
                    1000 * seconds / len(keys), sum(bool(np.isnan(p).any()) for p in points), len(cache))
        return cache


def dataset_items(dataset, label: int | None = None, batch_size: int = 64):
    """(key, open picture) for each row of a training dataset ('image' and 'target' columns), keyed as the face
    cache keys it (`training.data.FaceCache.key`: the path, else a hash of the bytes); only class `label` when given."""
    import datasets

    from .data import FaceCache, open_rgb

    rows = dataset.select_columns(["image", "target"]).cast_column("image", datasets.Image(decode=False))
    for batch in rows.iter(batch_size=batch_size):
        for item, target in zip(batch["image"], batch["target"]):
            if label is None or target == label:
                yield FaceCache.key(item), (lambda item=item: open_rgb(item))


def check(paths: list, mesh_path: str | Path = DEFAULT_PATH) -> dict:
    """The port measured on face photos: against a TFLite interpreter on the same crops where one is installed
    (ai-edge-litert: a check, not a dependency), the landmarks' layout (the subject's right eye, nose, left eye from
    left to right; eyes above the nose above the mouth; all inside the face oval's hull), mirror consistency (the
    mirrored photo's eyes and nose, mirrored back, against the photo's, over the eye distance) and times."""
    from detector.images import open_file_rgb

    mesh = FaceMesh.from_tflite(mesh_path)
    pictures = [open_file_rgb(p) for p in paths]
    report: dict = {"photos": len(paths), "torch_threads": torch.get_num_threads()}
    crops = []
    for picture in pictures:
        faces = find_faces(picture)
        left, top, right, bottom = face_box(faces[0]) if faces else (0, 0, picture.width, picture.height)
        matrix = crop_matrix(((left + right) / 2, (top + bottom) / 2), max(right - left, bottom - top) * CROP_SCALE)
        crops.append(cv2.warpAffine(np.asarray(picture), matrix, (INPUT_SIDE, INPUT_SIDE), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE).astype(np.float32) / 255.0)
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        logger.info("no TFLite interpreter installed (pip install ai-edge-litert): the port is checked by geometry only")
    else:
        interpreter = Interpreter(model_path=str(mesh_path))
        interpreter.allocate_tensors()
        point_diffs, flag_diffs = [], []
        for crop in crops:
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], crop[None])
            interpreter.invoke()
            outputs = [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]
            expected = next(v for v in outputs if v.size == 1404).reshape(468, 3)
            expected_flag = next(v for v in outputs if v.size == 1).item()
            with torch.no_grad():
                points, flag = mesh(torch.from_numpy(crop).permute(2, 0, 1)[None])
            point_diffs.append(float(np.abs(points[0].numpy() - expected).max()))
            flag_diffs.append(abs(float(flag) - expected_flag))
        report["interpreter"] = {"crops": len(crops), "landmarks_max_abs_diff_px": max(point_diffs),
                                 "landmarks_mean_of_crop_max_px": float(np.mean(point_diffs)),
                                 "face_logit_max_abs_diff": max(flag_diffs)}
    found_count = in_order = inside = 0
    mirror_errors = []
    for picture in pictures:
        found = face_landmarks(mesh, picture)
        if found is None:
            continue
        found_count += 1
        points = found.points[:, :2]
        right_eye, left_eye = points[list(RIGHT_EYE)].mean(axis=0), points[list(LEFT_EYE)].mean(axis=0)
        nose, mouth = points[NOSE_TIP], points[list(MOUTH)].mean(axis=0)
        in_order += bool(right_eye[0] < nose[0] < left_eye[0] and max(right_eye[1], left_eye[1]) < nose[1] < mouth[1])
        hull = cv2.convexHull(points[list(FACE_OVAL)].astype(np.float32))
        inside += all(cv2.pointPolygonTest(hull, (float(q[0]), float(q[1])), False) > 0
                      for q in (right_eye, left_eye, nose, mouth))
        mirrored = face_landmarks(mesh, picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
        if mirrored is not None:
            back = mirrored.points[:, :2].copy()
            back[:, 0] = picture.width - back[:, 0]
            pairs = [(back[list(LEFT_EYE)].mean(axis=0), right_eye), (back[list(RIGHT_EYE)].mean(axis=0), left_eye),
                     (back[NOSE_TIP], nose)]
            mirror_errors.append(max(float(np.linalg.norm(a - b)) for a, b in pairs)
                                 / max(float(np.linalg.norm(left_eye - right_eye)), 1e-6))
    report["geometry"] = {"face_found": found_count, "eyes_nose_mouth_in_order": in_order,
                          "eyes_nose_mouth_inside_oval_hull": inside, "mirrored": len(mirror_errors),
                          "mirror_error_over_eye_distance": {
                              "median": float(np.median(mirror_errors)), "p90": float(np.percentile(mirror_errors, 90)),
                              "max": float(np.max(mirror_errors))} if mirror_errors else None}
    batch = torch.from_numpy(crops[0]).permute(2, 0, 1)[None]
    with torch.no_grad():
        for _ in range(5):
            mesh(batch)
        start = time.perf_counter()
        for _ in range(50):
            mesh(batch)
    report["ms_network_per_crop"] = 1000 * (time.perf_counter() - start) / 50
    start = time.perf_counter()
    for picture in pictures:
        find_faces(picture)
    report["ms_face_finder_per_photo"] = 1000 * (time.perf_counter() - start) / len(pictures)
    start = time.perf_counter()
    LandmarkCache.build(None, ((str(p), lambda picture=picture: picture) for p, picture in zip(paths, pictures)), mesh)
    report["ms_cache_per_photo"] = 1000 * (time.perf_counter() - start) / len(pictures)
    start = time.perf_counter()
    for picture in pictures:
        fingerprint(picture)
    report["ms_fingerprint_per_photo"] = 1000 * (time.perf_counter() - start) / len(pictures)
    return report


if __name__ == "__main__":
    import argparse
    import json

    from detector.images import open_file_rgb

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description="Face Mesh landmarks of face photos into a landmark cache, or (--check) "
                                                 "the port measured on them.")
    parser.add_argument("images", nargs="+", help="face photos")
    parser.add_argument("--cache", help=".npz landmark cache to complete")
    parser.add_argument("--check", metavar="JSON", help="measure the port on the photos (see check()) into this file")
    parser.add_argument("--face-mesh", default=str(DEFAULT_PATH), help="MediaPipe's face_landmark.tflite")
    args = parser.parse_args()
    if not args.cache and not args.check:
        parser.error("pass --cache FILE, --check FILE or both")
    if args.cache:
        LandmarkCache.build(args.cache, ((str(Path(p).resolve()), lambda p=p: open_file_rgb(p)) for p in args.images),
                            args.face_mesh)
    if args.check:
        result = check(args.images, args.face_mesh)
        Path(args.check).write_text(json.dumps(result, indent=2) + "\n")
        logger.info("%s", json.dumps(result, indent=2))
