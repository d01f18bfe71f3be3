"""Videos made here from real face photos (OpenCV's VideoWriter), analysed end to end; bad videos refused in words."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from detector import WHOLE_IMAGE, DetectorError
from detector import video as video_module
from detector.video import VideoInfo, analyze_video, rule_text, sample_indices
from scenes import write_video

FPS, SECONDS = 8, 4  # 32 frames: each second shows the next of the four example faces


@pytest.fixture(scope="module")
def clip(tmp_path_factory, face_paths):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", face_paths, seconds=SECONDS, fps=FPS)


@pytest.fixture(scope="module")
def every_frame(clip) -> list[np.ndarray]:
    """Every frame, decoded one after the other without seeking: the truth a seek must reproduce."""
    capture, frames = cv2.VideoCapture(str(clip)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    assert len(frames) == FPS * SECONDS
    return frames


@pytest.fixture(scope="module")
def analysed(detector, clip):
    return analyze_video(detector, clip, frames=6)


def test_sampled_frames_are_the_right_frames_and_each_face_is_judged(detector, analysed, every_frame):
    assert [frame.index for frame in analysed.frames] == [2, 8, 13, 18, 24, 29]  # the middles of 6 equal parts
    for frame in analysed.frames:
        assert frame.time == pytest.approx(frame.index / FPS)
        expected = detector.analyze(every_frame[frame.index], faces=True)
        assert len(frame.faces) == 1 and frame.note is None
        assert frame.faces[0]["box"] == list(expected.faces[0].box)
        assert frame.p_fake == pytest.approx(expected.p_fake, abs=1e-4)  # seeking landed on the frame asked for


def test_a_video_reports_frames_flagged_of_frames_read_and_no_verdict(detector, analysed):
    """The video score (the mean of the top quarter) was read against thresholds fitted on single photos, and shown
    as a verdict and a "calibrated" probability nobody had fitted or measured for videos. A video now gets what was
    measured for its frames: how many reach the image threshold, out of how many were read."""
    threshold = detector.fake_threshold
    flagged = [frame.p_fake >= threshold for frame in analysed.frames]
    assert [frame.flagged for frame in analysed.frames] == flagged
    assert (analysed.frames_flagged, analysed.frames_read, analysed.threshold) == (sum(flagged), 6, threshold)
    assert analysed.summary == f"{sum(flagged)} of 6 frames flagged at the image threshold ({threshold * 100:.0f}%)"
    assert analysed.most_suspicious.p_fake == max(frame.p_fake for frame in analysed.frames)
    record = analysed.to_dict()
    assert not {"label", "verdict", "probabilities", "p_fake", "top_k"} & (set(record) | set(vars(analysed)))
    assert "calibrated" not in str({key: value for key, value in record.items() if key != "frames"})
    assert (record["frames_flagged"], record["frames_read"], record["summary"]) == (sum(flagged), 6, analysed.summary)
    top = analysed.most_suspicious
    assert record["most_suspicious_frame"] == {"index": top.index, "time": round(top.time, 3), "p_fake": top.p_fake}
    assert record["rule"] == rule_text(threshold) and "No verdict is given for the video as a whole" in record["rule"]
    assert [frame["flagged"] for frame in record["frames"]] == flagged
    info = analysed.info
    assert (info.width, info.height, info.fps, info.frame_count, info.duration) == (480, 360, FPS, 32, SECONDS)


@pytest.mark.parametrize(
    "info, frames, every, expected",
    [
        (VideoInfo(480, 360, 8.0, 32), 4, None, [4, 12, 20, 28]),
        (VideoInfo(480, 360, 8.0, 32), 100, None, list(range(32))),  # never more than the video has
        (VideoInfo(480, 360, 8.0, 32), None, 1.0, [0, 8, 16, 24]),
        (VideoInfo(480, 360, 30.0, 95), None, 1.0, [0, 30, 60, 90]),
    ],
)
def test_sample_indices(info, frames, every, expected):
    assert sample_indices(info, frames, every) == expected


def test_sampling_is_capped_and_checked():
    ten_minutes = VideoInfo(1280, 720, 25.0, 25 * 600)
    assert len(sample_indices(ten_minutes, None, 0.5)) == video_module.MAX_SAMPLES == 600
    for frames, every in ((0, None), (None, 0.0), (None, -1.0)):
        with pytest.raises(DetectorError):
            sample_indices(ten_minutes, frames, every)


def test_only_the_sampled_frames_are_decoded_and_progress_is_reported(detector, clip, monkeypatch):
    decoded, reported = [], []
    original = video_module._Reader.frame
    monkeypatch.setattr(video_module._Reader, "frame", lambda self, index: decoded.append(index) or original(self, index))
    result = analyze_video(detector, clip.read_bytes(), every_seconds=1.0, progress=lambda done, total: reported.append((done, total)))
    assert decoded == [0, 8, 16, 24] == [frame.index for frame in result.frames]
    assert reported[0] == (0, 4) and reported[-1] == (4, 4)


def test_timeline_and_the_most_suspicious_frames(analysed):
    timeline = analysed.timeline()
    assert isinstance(timeline, Image.Image) and timeline.size == (900, 300) and timeline.mode == "RGB"
    assert len(np.unique(np.asarray(timeline).reshape(-1, 3), axis=0)) > 10  # something was drawn
    top = analysed.top_frames
    assert len(top) == 4 and [f.p_fake for f, _ in top] == sorted((f.p_fake for f in analysed.frames), reverse=True)[:4]
    for frame, analysis in top:
        assert analysis.p_fake == frame.p_fake and analysis.image.size == (480, 360)
        assert all(view.size == (480, 360) for view in analysis.render())
    record = analysed.to_dict()
    assert record["frames_read"] == 6 and len(record["frames"]) == 6


@pytest.mark.parametrize("name, fourcc", [("clip.webm", "VP80"), ("clip.mov", "mp4v")])
def test_webm_and_mov_are_read_too(detector, face_paths, tmp_path, name, fourcc):
    path = write_video(tmp_path / name, face_paths, seconds=2, fps=4, size=(320, 240), fourcc=fourcc)
    result = analyze_video(detector, path, frames=3)
    assert len(result.frames) == 3 and all(len(frame.faces) == 1 for frame in result.frames)


def test_whole_frames_when_asked_or_when_no_face_is_found(detector, tmp_path, face_paths):
    wall = tmp_path / "wall.mp4"
    writer = cv2.VideoWriter(str(wall), cv2.VideoWriter_fourcc(*"mp4v"), 4, (160, 120))
    for i in range(8):
        writer.write(np.full((120, 160, 3), 60 + 10 * i, np.uint8))
    writer.release()
    result = analyze_video(detector, wall, frames=4)
    assert result.frames_without_face == 4 and all(frame.note and not frame.faces for frame in result.frames)
    clip = write_video(tmp_path / "faces.mp4", face_paths, seconds=1, fps=4)
    whole = analyze_video(detector, clip, frames=2, faces=False)
    assert all(frame.faces == [] and frame.note == WHOLE_IMAGE for frame in whole.frames)
    assert whole.frames_without_face == 0  # no face was looked for


def _video_bytes(tmp_path, size, frames, fps=4.0) -> bytes:
    path = tmp_path / "made.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    frame = np.zeros((size[1], size[0], 3), np.uint8)
    for _ in range(frames):
        writer.write(frame)
    writer.release()
    return path.read_bytes()


def test_bad_videos_get_a_clear_message(detector, clip, face_paths, tmp_path):
    data = clip.read_bytes()
    mdat, moov = data.find(b"mdat"), data.find(b"moov")
    zeroed = bytearray(data)
    zeroed[mdat + 8 : moov - 8] = bytes(moov - 8 - mdat - 8)
    cases = [
        (b"", "empty"),
        (b"just some text, not a video at all" * 10, "not a video"),
        (face_paths[0].read_bytes(), "still image"),
        (data[: len(data) // 2], "corrupt"),  # truncated: the index (moov) is written last
        (bytes(zeroed), "no decodable frames"),
        (_video_bytes(tmp_path, (64, 48), 0), "corrupt"),  # a writer closed before any frame
        (_video_bytes(tmp_path, (4000, 2200), 2), "limit is 8.3 MP"),
        (_video_bytes(tmp_path, (32, 32), 602, fps=1.0), "limit is 10 minutes"),
    ]
    for source, words in cases:
        with pytest.raises(DetectorError, match=words):
            analyze_video(detector, source)
    with pytest.raises(DetectorError, match="No such file"):
        analyze_video(detector, tmp_path / "missing.mp4")
    huge = tmp_path / "huge.mp4"
    with huge.open("wb") as f:  # sparse: the size is declared, not written
        f.truncate(video_module.MAX_VIDEO_BYTES + 100_000)
    with pytest.raises(DetectorError, match="The video is 100.1 MB; the limit is 100 MB"):
        analyze_video(detector, huge)


def test_frames_are_flagged_at_the_models_image_threshold(detector, clip, analysed):
    from detector import Detector

    calibrated = Detector(detector.loaded, device="cpu", precision="fp32")
    scores = [frame.p_fake for frame in analysed.frames]
    highest, second = sorted({round(score, 3) for score in scores})[-2:][::-1]
    calibrated.threshold = (highest + second) / 2  # between the two highest scores: the top face's frames flagged
    video = analyze_video(calibrated, clip, frames=6)
    top = sum(score >= calibrated.threshold for score in scores)
    assert 1 <= top < 6 and (video.frames_flagged, video.frames_read, video.threshold) == (top, 6, calibrated.threshold)
    assert f"image threshold, {calibrated.threshold * 100:.0f}%" in video.rule
    calibrated.threshold = max(scores) + 1e-3
    assert analyze_video(calibrated, clip, frames=6).frames_flagged == 0
