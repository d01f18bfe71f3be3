"""One result row per input, the stable JSON shape shared by the CLI and the API.

Keys `file`, `label`, `probabilities`, `error` are a promise to scripts: add fields, never rename. `verdict` is the
three-level reading (likely real / uncertain / likely fake) of the same probability.
"""
from __future__ import annotations

from .detector import Analysis, FaceResult
from .video import VideoAnalysis


def _cam(cam, box) -> dict:
    return {"cam": [[round(float(v), 4) for v in line] for line in cam], "cam_box": [round(float(v), 2) for v in box]}


def face_row(face: FaceResult, cams: bool = False) -> dict:
    """{'box', 'label', 'verdict', 'probabilities'} (+ 'cam', 'cam_box' in the image's pixels with `cams`)."""
    row = face.to_dict()
    if cams:
        row.update(_cam(face.analysis.cam, face.cam_box))
    return row


def result_row(file: str, analysis: Analysis | None, error: str | None = None, cams: bool = False) -> dict:
    """{'file', 'label', 'verdict', 'probabilities', 'error', 'explained_class', 'faces', 'note'}: None where the input
    failed.

    `faces` lists every face found ([] when none was found, or in whole-image mode); `label` and
    `probabilities` are then the most suspicious face's. `note` says when no face was found and the
    whole image was analysed instead. With `cams`, the Grad-CAM grids (values 0–1) and the boxes they
    cover are added: `cam`/`cam_box` for the verdict, and per face."""
    row = {
        "file": file,
        "label": analysis.label if analysis else None,
        "verdict": analysis.verdict if analysis else None,
        "probabilities": dict(analysis.probabilities) if analysis else None,
        "error": error,
        "explained_class": analysis.explained if analysis else None,
        "faces": [face_row(face, cams) for face in analysis.faces] if analysis else None,
        "note": analysis.note if analysis else None,
    }
    if cams and analysis:
        row.update(_cam(analysis.cam, analysis.box))
    return row


VIDEO_KEYS = ("summary", "frames_flagged", "frames_read", "threshold", "rule", "most_suspicious_frame",
              "frames_without_face", "undecodable_frames", "video", "frames")


def video_row(file: str, video: VideoAnalysis | None, error: str | None = None) -> dict:
    """A video's row: `file` and `error` as for images, then `summary` ("3 of 32 frames flagged at the image threshold
    (86%)"), `frames_flagged` of `frames_read`, `threshold` (the image threshold a frame is flagged at), `rule` (that,
    in words), `most_suspicious_frame` (index, time, p_fake), `frames_without_face`, `undecodable_frames`, `video`
    (width, height, fps, frame_count, duration_s) and `frames` (index, time, flagged, label, verdict, probabilities,
    faces, note per frame read); None where the video failed. No `label`, `verdict` or `probabilities` for the video
    as a whole: no video-level threshold was fitted (detector/video.py)."""
    details = video.to_dict() if video else {}
    return {"file": file, "error": error, **{key: details.get(key) for key in VIDEO_KEYS}}
