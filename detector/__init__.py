"""Deepfake face image detector: `Detector.from_pretrained(...).analyze(image)`."""
from .detector import Analysis, Detector
from .errors import DetectorError
from .images import load_image

__all__ = ["Analysis", "Detector", "DetectorError", "load_image"]
