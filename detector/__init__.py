"""Deepfake face image detector: `Detector.from_pretrained(...).analyze(image)`."""
from .detector import NO_FACE, WHOLE_IMAGE, Analysis, Detector, FaceResult
from .errors import DetectorError
from .images import load_image

__all__ = ["NO_FACE", "WHOLE_IMAGE", "Analysis", "Detector", "DetectorError", "FaceResult", "load_image"]
