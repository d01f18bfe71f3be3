"""Videos: sample frames, analyse the faces in each, and count the frames flagged; a timeline of the scores.

    video = analyze_video(detector, "clip.mp4")                 # 32 frames spread evenly over the clip
    video = analyze_video(detector, data, every_seconds=1.0)     # or one frame per second (bytes work too)
    print(video.summary)                                         # "3 of 32 frames flagged at the image threshold (86%)"
    print(video.most_suspicious.time, video.most_suspicious.p_fake)
    video.timeline().save("timeline.png")

Only the sampled frames are converted and analysed. To reach one, the reader seeks
(`CAP_PROP_POS_FRAMES`: FFmpeg decodes from the keyframe before it, since other frames depend on it)
or, when it lies at most `GRAB_GAP` frames after the previous one, grabs forward (decodes without
converting), which costs less than seeking back to a keyframe. The video is
read from memory (bytes or a path read into memory), never copied to disk. Frames are analysed
`detector.batch_size` at a time, each through `Detector.analyze_batch` with face search: a frame's
score is its most suspicious face's p_fake (the whole frame's when no face is found in it).

What a video gets (`rule_text`): each frame read is flagged when its score reaches the image threshold
(`Detector.fake_threshold`: the model's calibrated threshold, fitted on single photos, else 0.5), and the
result is the count of frames flagged out of frames read, the timeline and the most suspicious frame. There
is no verdict and no probability for the video as a whole: no video-level rule could be fitted and its false
positives measured on the data this project has (no set of labelled videos), so none is claimed.

Limits (`DetectorError` with a message, for a person): MP4, WebM or MOV (QuickTime) files up to
`MAX_VIDEO_BYTES`, at most `MAX_DURATION_S` long, frames of at most `MAX_FRAME_PIXELS`; an empty,
corrupt or truncated file, or one with no decodable frame, is refused with the reason.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Union

import cv2
import numpy as np
from PIL import Image

from .detector import NO_FACE, Analysis, Detector
from .errors import DetectorError
from .images import read_limited

MAX_VIDEO_BYTES = 100 * 1024 * 1024
MAX_DURATION_S = 10 * 60
MAX_FRAME_PIXELS = 3840 * 2160  # 4K UHD
DEFAULT_FRAMES = 32
MAX_SAMPLES = 600  # one per second over the longest video allowed
GRAB_GAP = 48  # a sample at most this many frames ahead is reached by grabbing forward, not by seeking
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".webm", ".mov")
FORMAT_NAMES = "MP4 (.mp4, .m4v), WebM or MOV"


def rule_text(threshold: float = 0.5) -> str:
    """How a video's frames are counted, in words: the one rule a video result follows."""
    return (f"a frame is flagged when its p_fake reaches the image threshold, {threshold * 100:.0f}% (fitted on single "
            "photos); a frame's p_fake is its most suspicious face's, or the whole frame's when it shows no face. "
            "No verdict is given for the video as a whole: no video-level threshold has been fitted, nor its "
            "false-positive rate measured.")


VideoSource = Union[str, os.PathLike, bytes, BinaryIO]
Progress = Callable[[int, int], None]  # (frames analysed, frames sampled)


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fps": round(self.fps, 3), "frame_count": self.frame_count,
                "duration_s": round(self.duration, 3)}


@dataclass
class FrameResult:
    """One sampled frame: where it is in the video and what the detector said about it (as for one photo)."""

    index: int
    time: float  # seconds from the start
    label: str
    probabilities: dict[str, float]
    faces: list[dict]  # box, label, probabilities per face found ([] when none)
    note: str | None  # set when no face was found and the whole frame was analysed
    verdict: str = ""  # likely real / uncertain / likely fake (detector.VERDICTS), the frame's as a photo's
    flagged: bool = False  # p_fake at or above the image threshold

    @property
    def p_fake(self) -> float:
        return self.probabilities["fake"]

    @classmethod
    def of(cls, index: int, time: float, analysis: Analysis, threshold: float) -> "FrameResult":
        return cls(index, time, analysis.label, dict(analysis.probabilities), [face.to_dict() for face in analysis.faces],
                   analysis.note, analysis.verdict, analysis.p_fake >= threshold)

    def to_dict(self) -> dict:
        return {"index": self.index, "time": round(self.time, 3), "flagged": self.flagged, "label": self.label,
                "verdict": self.verdict, "probabilities": dict(self.probabilities), "faces": self.faces, "note": self.note}


@dataclass
class VideoAnalysis:
    """The frames flagged out of the frames read, each frame's result, and the most suspicious frames' full analyses.
    No verdict for the video: see the module's docstring."""

    frames: list[FrameResult]
    top_frames: list[tuple[FrameResult, Analysis]] = field(repr=False)  # most suspicious first, for rendering
    info: VideoInfo
    undecodable: int = 0  # sampled frames the decoder could not return
    threshold: float = 0.5  # the image threshold a frame is flagged at

    @property
    def rule(self) -> str:
        return rule_text(self.threshold)

    @property
    def frames_read(self) -> int:
        return len(self.frames)

    @property
    def frames_flagged(self) -> int:
        return sum(1 for frame in self.frames if frame.flagged)

    @property
    def most_suspicious(self) -> FrameResult:
        return max(self.frames, key=lambda frame: frame.p_fake)

    @property
    def summary(self) -> str:
        """"3 of 32 frames flagged at the image threshold (86%)": what the video's result is, in one line."""
        return (f"{self.frames_flagged} of {self.frames_read} frames flagged at the image threshold "
                f"({self.threshold * 100:.0f}%)")

    @property
    def frames_without_face(self) -> int:
        return sum(1 for frame in self.frames if frame.note == NO_FACE)

    def timeline(self, size: tuple[int, int] = (900, 300)) -> Image.Image:
        return timeline_plot(self, size)

    def to_dict(self) -> dict:
        top = self.most_suspicious
        return {"summary": self.summary, "frames_flagged": self.frames_flagged, "frames_read": self.frames_read,
                "threshold": self.threshold, "rule": self.rule,
                "most_suspicious_frame": {"index": top.index, "time": round(top.time, 3), "p_fake": top.p_fake},
                "frames_without_face": self.frames_without_face, "undecodable_frames": self.undecodable,
                "video": self.info.to_dict(), "frames": [frame.to_dict() for frame in self.frames]}


# --- reading --------------------------------------------------------------------------------------


def _check_container(data: bytes) -> None:
    """MP4/MOV (an ISO media 'ftyp', 'moov', 'mdat', 'wide' or 'free' box first) or WebM/Matroska (EBML)."""
    head = data[:64]
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip") or head.startswith(b"\x1a\x45\xdf\xa3"):
        return
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8")) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        raise DetectorError(f"This is a still image, not a video: analyse it as an image. Videos: {FORMAT_NAMES}.")
    raise DetectorError(f"This file is not a video this app can read. Upload an {FORMAT_NAMES} file.")


class _Reader:
    """An OpenCV capture over bytes in memory, seeking only to the frames asked for."""

    def __init__(self, data: bytes):
        self.stream = io.BytesIO(data)  # kept here: OpenCV reads it through a pointer and holds no reference
        self.capture = cv2.VideoCapture(self.stream, cv2.CAP_FFMPEG, [])
        if not self.capture.isOpened():
            raise DetectorError(f"The video is corrupt or in a format that cannot be decoded. Upload an {FORMAT_NAMES} file.")
        get = self.capture.get
        width, height = int(get(cv2.CAP_PROP_FRAME_WIDTH)), int(get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps, count = float(get(cv2.CAP_PROP_FPS)), int(get(cv2.CAP_PROP_FRAME_COUNT))
        if width <= 0 or height <= 0 or count <= 0 or not (0 < fps <= 1000):
            self.close()
            raise DetectorError("The video has no decodable frames (its file is empty, truncated or corrupt).")
        self.info = VideoInfo(width, height, fps, count)
        self.position = 0

    def frame(self, index: int) -> np.ndarray | None:
        """The RGB frame at `index`, or None when it cannot be decoded."""
        gap = index - self.position
        if 0 <= gap <= GRAB_GAP and self.position >= 0:
            for _ in range(gap):
                if not self.capture.grab():
                    self.position = -1
                    return None
        else:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = self.capture.read()
        self.position = index + 1
        if not ok or frame is None or frame.ndim != 3:
            self.position = -1  # seek again next time
            return None
        if frame.shape[0] * frame.shape[1] > MAX_FRAME_PIXELS:
            raise _too_large(frame.shape[1], frame.shape[0])
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.capture.release()


def _too_large(width: int, height: int) -> DetectorError:
    return DetectorError(f"The video is {width}×{height} pixels; the limit is {MAX_FRAME_PIXELS / 1e6:.1f} MP a frame "
                         "(4K, 3840×2160). Scale it down and try again.")


def sample_indices(info: VideoInfo, frames: int | None = DEFAULT_FRAMES, every_seconds: float | None = None) -> list[int]:
    """Frame indices to analyse: `frames` spread evenly (the middle of equal parts), or one every `every_seconds`."""
    if every_seconds is not None:
        if every_seconds <= 0:
            raise DetectorError("The interval between sampled frames must be positive.")
        times = np.arange(0.0, info.duration, every_seconds)[:MAX_SAMPLES]
        indices = [min(info.frame_count - 1, int(round(t * info.fps))) for t in times]
    else:
        if not frames or frames < 1:
            raise DetectorError("Sample at least one frame.")
        frames = min(frames, MAX_SAMPLES, info.frame_count)
        indices = [min(info.frame_count - 1, int((i + 0.5) * info.frame_count / frames)) for i in range(frames)]
    return sorted(set(indices))


# --- analysis -------------------------------------------------------------------------------------


def analyze_video(detector: Detector, source: VideoSource, frames: int | None = DEFAULT_FRAMES,
                  every_seconds: float | None = None, faces: bool = True, keep: int = 4,
                  progress: Progress | None = None) -> VideoAnalysis:
    """Sample, analyse (faces per frame, in batches), count the frames flagged. `keep` most suspicious frames keep
    their full analysis."""
    data = read_limited(source, MAX_VIDEO_BYTES, "video")
    _check_container(data)
    reader = _Reader(data)
    try:
        info = reader.info
        if info.width * info.height > MAX_FRAME_PIXELS:
            raise _too_large(info.width, info.height)
        if info.duration > MAX_DURATION_S:
            raise DetectorError(f"The video lasts {info.duration / 60:.1f} minutes; the limit is "
                                f"{MAX_DURATION_S // 60} minutes. Cut the part to check and try again.")
        indices = sample_indices(info, frames, every_seconds)
        threshold = detector.fake_threshold
        results: list[FrameResult] = []
        top: list[tuple[FrameResult, Analysis]] = []
        undecodable = 0
        if progress:
            progress(0, len(indices))
        for start in range(0, len(indices), detector.batch_size):
            chunk = []
            for index in indices[start : start + detector.batch_size]:
                frame = reader.frame(index)
                if frame is None:
                    undecodable += 1
                else:
                    chunk.append((index, frame))
            if chunk:
                analyses = detector.analyze_batch([frame for _, frame in chunk], faces=faces)
                for (index, _), analysis in zip(chunk, analyses):
                    result = FrameResult.of(index, index / info.fps, analysis, threshold)
                    results.append(result)
                    top = sorted([*top, (result, analysis)], key=lambda item: -item[0].p_fake)[:keep]
            if progress:
                progress(min(start + detector.batch_size, len(indices)), len(indices))
    finally:
        reader.close()
    if not results:
        raise DetectorError("No frame of this video could be decoded (the file is truncated or corrupt).")
    return VideoAnalysis(frames=results, top_frames=top, info=info, undecodable=undecodable, threshold=threshold)


# --- the timeline -----------------------------------------------------------------------------------


def timeline_plot(video: VideoAnalysis, size: tuple[int, int] = (900, 300)) -> Image.Image:
    """p_fake over time (one dot per frame read, in its verdict's colour as a photo's: red where flagged; hollow where
    no face was found) and the image threshold; an RGB image. Uses matplotlib's Agg canvas, no global backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .verdicts import VERDICT_COLOURS

    dpi = 100
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    times = [frame.time for frame in video.frames]
    scores = [frame.p_fake for frame in video.frames]
    axes.plot(times, scores, color="#888888", linewidth=1, zorder=1)
    for frame in video.frames:
        colour = tuple(c / 255 for c in VERDICT_COLOURS[frame.verdict])
        axes.scatter([frame.time], [frame.p_fake], s=28, zorder=2, edgecolors=[colour],
                     facecolors="none" if not frame.faces else [colour])
    axes.axhline(video.threshold, color="#444444", linestyle=":", linewidth=1.5,
                 label=f"image threshold: {video.summary.split(' at the')[0]}")
    axes.set_xlim(0, max(video.info.duration, max(times) + 1e-3))
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("p_fake")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
