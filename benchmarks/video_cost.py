"""Cost per sampled video frame: seeking and decoding, face finding, and the whole analysis.

    python -m benchmarks.video_cost                    # the bundled model (or $DETECTOR_MODEL / --model)
    python -m benchmarks.video_cost --size 1920x1080 --seconds 20

Builds an MP4 (in a temporary folder, then read into memory) from the example faces (one face per frame, moving), then
times, for the default 32 evenly spread frames: decoding only those frames against decoding every
frame in order, finding faces in them, and `analyze_video` with face search and with whole frames.
Wall and CPU time are both given: on a shared machine the wall time also counts waiting for a core.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from benchmarks import print_results
from detector import Detector
from detector.faces import find_faces
from detector.video import DEFAULT_FRAMES, _Reader, analyze_video, sample_indices

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))


class Clock:
    """Wall time and this process's CPU time (all threads) since creation, in ms."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def ms(self) -> tuple[float, float]:
        return (time.perf_counter() - self.wall) * 1000, (time.process_time() - self.cpu) * 1000


def make_clip(path: Path, size: tuple[int, int], seconds: int, fps: int) -> bytes:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    side = round(min(size) * 0.6)
    faces = [np.asarray(Image.open(p).convert("RGB").resize((side, side)))[..., ::-1] for p in EXAMPLES]
    for index in range(seconds * fps):
        frame = np.full((size[1], size[0], 3), 150, np.uint8)
        x = (size[0] - side) * (index % fps) // fps
        frame[(size[1] - side) // 2 : (size[1] - side) // 2 + side, x : x + side] = faces[(index // fps) % len(faces)]
        writer.write(frame)
    writer.release()
    return path.read_bytes()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or Hub id (default: $DETECTOR_MODEL or the bundled model)")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    detector = Detector.from_pretrained(args.model)
    detector.warm_up()
    with tempfile.TemporaryDirectory() as folder:
        data = make_clip(Path(folder) / "clip.mp4", size, args.seconds, args.fps)

    reader = _Reader(data)
    indices = sample_indices(reader.info, args.frames)
    clock = Clock()
    frames = [reader.frame(index) for index in indices]
    decode_sampled = clock.ms()
    reader.close()
    reader = _Reader(data)
    clock = Clock()
    for index in range(reader.info.frame_count):
        reader.frame(index)
    decode_all = clock.ms()
    reader.close()

    clock = Clock()
    found = [find_faces(Image.fromarray(frame)) for frame in frames]
    find = clock.ms()

    timings = {}
    for name, faces in (("with_faces", True), ("whole_frames", False)):
        clock = Clock()
        analyze_video(detector, data, frames=args.frames, faces=faces)
        timings[name] = clock.ms()
    per_frame = lambda pair: f"{pair[0] / len(indices):.1f} ms wall, {pair[1] / len(indices):.1f} ms CPU"

    results = {
        "model": detector.name, "input_size": list(detector.preprocess.config["input_size"]), "device": str(detector.device),
        "video": f"{size[0]}x{size[1]}, {args.seconds} s at {args.fps} fps, mp4v", "frames_sampled": len(indices),
        "faces_found_per_frame": float(np.mean([len(f) for f in found])),
        "torch_threads": torch.get_num_threads(),
        "decode_sampled_total": f"{decode_sampled[0]:.0f} ms wall, {decode_sampled[1]:.0f} ms CPU",
        "decode_every_frame_total": f"{decode_all[0]:.0f} ms wall, {decode_all[1]:.0f} ms CPU",
        "find_faces_per_frame": per_frame(find),
        "analyze_video_per_frame_with_faces": per_frame(timings["with_faces"]),
        "analyze_video_per_frame_whole_frames": per_frame(timings["whole_frames"]),
    }
    print_results(results, digits=1)
    return results


if __name__ == "__main__":
    main()
