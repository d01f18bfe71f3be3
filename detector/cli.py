"""`python -m detector PATH...`: files, folders and globs → a table, JSON or CSV.

    python -m detector photo.jpg faces/ 'shots/**/*.png' --json
    python -m detector faces/ --model hf-hub:owner/name --csv > results.csv
    python -m detector group.jpg --whole-image        # one verdict for the whole picture, no face search
    python -m detector clip.mp4 --frames 64 --json    # a video: frames flagged of frames read, each frame's result
    python -m detector photos/ --report reports/       # also one HTML report per image (provenance, spectrum, ...)

Each image's faces are found first and judged one by one; its verdict is the most suspicious face
(JSON: `faces` lists each face's box, label and probabilities). With no face found, the whole image
is analysed and `note` says so. A file named with a video extension (.mp4, .m4v, .webm, .mov) is
analysed as a video (detector/video.py: `--frames` spread evenly, or `--per-second`); its row holds
how many of the frames read were flagged at the image threshold, the most suspicious frame and every frame's
result, and no verdict on the video as a whole. Folders are searched for images only.
With `--report DIR`, each image's original bytes are also checked for provenance metadata (C2PA, XMP, EXIF,
PNG text) and one self-contained HTML report is written per image (detector/evidence_report.py); the JSON row
then has `provenance` (the findings), `provenance_level` and `provenance_summary` (how strongly the file declares an
AI origin, and the sentence the page and the report show; provenance.fields) and `report` (the file written).

Exit status: 0 when every input was analysed, 1 when any input failed (all results are still
printed), 2 when the model cannot be loaded. Analysis itself is `Detector.analyze_batch`.
"""
from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from . import provenance
from .detector import Analysis, Detector
from .errors import DetectorError
from .evidence_report import Evidence, report_filename, report_html
from .images import EXTENSIONS, images_in, load_image, read_limited
from .model import LABEL_NAMES, PRECISIONS, default_source
from .report import result_row, video_row
from .video import DEFAULT_FRAMES, VIDEO_EXTENSIONS, analyze_video

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m detector", description="Tell real face photos from generated ones, with a Grad-CAM explanation."
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or glob patterns")
    parser.add_argument("--model", help="a local model folder or Hub id (default: $DETECTOR_MODEL, else the bundled model)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON array, one object per input")
    output.add_argument("--csv", action="store_true", help="print CSV: file,label,p_real,p_fake,error,faces,verdict,frames_flagged,frames_read")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per forward pass (default: 16)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: the precision the model's threshold was fitted in (its config's calibration."
                             "precision), bf16 only where the CPU/GPU computes it natively; without that record, bf16 "
                             "where native")
    parser.add_argument("--target", choices=LABEL_NAMES, help="class the Grad-CAM explains (default: the predicted one)")
    parser.add_argument("--whole-image", action="store_true",
                        help="analyse each image whole instead of finding the faces and judging each one")
    video = parser.add_argument_group("videos (.mp4, .m4v, .webm, .mov files named on the command line)")
    video.add_argument("--frames", type=int, default=DEFAULT_FRAMES, metavar="N",
                       help=f"frames to sample, spread evenly (default: {DEFAULT_FRAMES})")
    video.add_argument("--per-second", action="store_true", help="sample one frame per second instead")
    parser.add_argument("--report", metavar="DIR", type=Path,
                        help="also write one self-contained HTML report per image into DIR (created if needed): verdict, "
                             "faces, provenance metadata, spectrum, model hash (images only, not videos)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    if args.report is not None:
        try:
            args.report.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            parser.error(f"--report: cannot create the folder {args.report}: {err.strerror or err}")
    return args


def expand(arguments: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    """Each argument → (file, None) for every image it names (each file once), or (argument, error) when it names none."""
    seen: set[str] = set()
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            files, missing = list(map(str, images_in(path))), f"No images ({', '.join(EXTENSIONS)}) in this folder."
        elif path.exists():
            files, missing = [argument], ""
        else:
            files = []
            for match in map(Path, sorted(glob.glob(argument, recursive=True))):
                if match.is_dir():
                    files += map(str, images_in(match))
                elif match.suffix.lower() in EXTENSIONS:
                    files.append(str(match))
            missing = "No such file, and no images match it as a pattern."
        if not files:
            yield argument, missing
        for file in files:
            if file not in seen:
                seen.add(file)
                yield file, None


def analyze_files(detector: Detector, inputs: list[tuple[str, str | None]], batch_size: int, target: str | None,
                  faces: bool = True, report_dir: Path | None = None) -> list[dict]:
    """One result row per input, in order; a bad input gets its error and the others still run. With `report_dir`,
    each image's original bytes are checked for provenance and its HTML report is written there."""
    errors = [error for _, error in inputs]
    analyses: list[Analysis | None] = [None] * len(inputs)
    declared: dict[int, tuple[str, int, list[provenance.Finding]]] = {}  # index → sha256, size, findings
    with tqdm(total=len(inputs), unit="image", file=sys.stderr, disable=None) as progress:
        for start in range(0, len(inputs), batch_size):
            indices, images = [], []
            for index in range(start, min(start + batch_size, len(inputs))):
                if errors[index] is None:
                    try:
                        data = read_limited(inputs[index][0])  # the size checked before the bytes are read, once
                        images.append(load_image(data))
                        indices.append(index)
                        if report_dir is not None:
                            declared[index] = (hashlib.sha256(data).hexdigest(), len(data),
                                               provenance.check(data, Path(inputs[index][0]).name))
                    except (DetectorError, OSError) as err:
                        errors[index] = str(err) if isinstance(err, DetectorError) else f"Could not read the file: {err}"
            for index, analysis in zip(indices, detector.analyze_batch(images, target, faces)):
                analyses[index] = analysis
            progress.update(min(batch_size, len(inputs) - start))
    rows = [result_row(file, analysis, error) for (file, _), analysis, error in zip(inputs, analyses, errors)]
    if report_dir is not None:
        write_reports(detector, report_dir, inputs, analyses, declared, rows)
    return rows


def write_reports(detector: Detector, folder: Path, inputs, analyses, declared, rows: list[dict]) -> None:
    """One report per analysed image, named after it (made safe; `-2`, `-3`... when two inputs share a name)."""
    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for index, analysis in enumerate(analyses):
        rows[index].update(provenance.fields(None), report=None)
        if analysis is None or index not in declared:
            continue
        file = inputs[index][0]
        sha256, size, findings = declared[index]
        name = report_filename(file)
        stem, counter = name[: -len(".report.html")], 2
        while name in used:
            name, counter = f"{stem}-{counter}.report.html", counter + 1
        used.add(name)
        evidence = Evidence(name=Path(file).name, sha256=sha256, size=size, analysis=analysis, findings=findings)
        rows[index].update(provenance.fields(findings))
        try:
            (folder / name).write_text(report_html(evidence, detector), encoding="utf-8")
        except OSError as err:
            rows[index]["error"] = f"Could not write the report {folder / name}: {err.strerror or err}"
            continue
        rows[index]["report"] = str(folder / name)
        logger.debug("report written: %s", folder / name)


def is_video(file: str) -> bool:
    return Path(file).suffix.lower() in VIDEO_EXTENSIONS


def analyze_inputs(detector: Detector, inputs: list[tuple[str, str | None]], args: argparse.Namespace) -> list[dict]:
    """Images (batched, `analyze_files`) and videos (one by one, `analyze_video`), rows in the order given."""
    images = [index for index, (file, error) in enumerate(inputs) if error is not None or not is_video(file)]
    rows: list[dict | None] = [None] * len(inputs)
    image_rows = analyze_files(detector, [inputs[i] for i in images], args.batch_size, args.target, not args.whole_image,
                               args.report)
    for index, row in zip(images, image_rows):
        rows[index] = row
    for index, (file, _) in enumerate(inputs):
        if rows[index] is None:
            rows[index] = analyze_video_file(detector, file, args)
    return rows


def analyze_video_file(detector: Detector, file: str, args: argparse.Namespace) -> dict:
    with tqdm(unit="frame", desc=Path(file).name, file=sys.stderr, disable=None) as progress:
        def report(done: int, total: int) -> None:
            progress.total = total
            progress.update(done - progress.n)

        try:
            video = analyze_video(detector, file, frames=args.frames, every_seconds=1.0 if args.per_second else None,
                                  faces=not args.whole_image, progress=report)
        except DetectorError as err:
            return video_row(file, None, str(err))
    return video_row(file, video)


def _probability(result: dict, label: str) -> str:
    return f"{result['probabilities'][label]:.4f}" if result.get("probabilities") else ""


def _verdict(result: dict) -> str:
    """An image's verdict; for a video, the frames flagged of the frames read (a video gets no verdict)."""
    if "frames" in result:
        return "-" if result["error"] else f"{result['frames_flagged']} of {result['frames_read']} frames flagged"
    return result["verdict"] or "-"


def _faces(result: dict, searched: bool) -> str:
    """How many faces were judged: a count, 'none' (whole image analysed instead) or '-' (not searched, or failed)."""
    if result["error"]:
        return "-"
    if "frames" in result:
        return f"video: {result['frames_read']} frames"
    if not searched:
        return "-"
    return str(len(result["faces"])) if result["faces"] else "none"


def print_table(results: list[dict], searched: bool = True) -> None:
    rows = [("file", "verdict", "p_fake", "faces", "error")]
    rows += [(r["file"], _verdict(r), _probability(r, "fake") or "-", _faces(r, searched), r["error"] or "")
             for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4]).rstrip())
    if searched and any(r.get("note") for r in results):
        print(f"faces 'none': {next(r['note'] for r in results if r.get('note'))}", file=sys.stderr)
    if any(r.get("rule") for r in results):
        print(f"videos: {next(r['rule'] for r in results if r.get('rule'))}", file=sys.stderr)


def print_csv(results: list[dict]) -> None:
    """file,label,p_real,p_fake,error,faces,verdict,frames_flagged,frames_read: `faces` is the number of faces judged
    (0: the whole image; empty: failed); `verdict` is likely real / uncertain / likely fake; a video fills only the
    last two (it gets no label, probability or verdict). New columns come last, so scripts reading the others by
    position keep working."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["file", "label", "p_real", "p_fake", "error", "faces", "verdict", "frames_flagged", "frames_read"])
    for r in results:
        probabilities = r.get("probabilities") or {}
        writer.writerow([r["file"], r.get("label") or "", probabilities.get("real", ""), probabilities.get("fake", ""),
                         r["error"] or "", "" if r.get("faces") is None else len(r["faces"]), r.get("verdict") or "",
                         "" if r.get("frames_flagged") is None else r["frames_flagged"],
                         "" if r.get("frames_read") is None else r["frames_read"]])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        detector = Detector.from_pretrained(args.model or default_source(), batch_size=args.batch_size,
                                            precision=args.precision)
    except DetectorError as err:
        print(f"error: could not load the model: {err}", file=sys.stderr)
        return 2
    try:
        results = analyze_inputs(detector, list(expand(args.paths)), args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(results, indent=2))
    elif args.csv:
        print_csv(results)
    else:
        print_table(results, searched=not args.whole_image)
    return 1 if any(r["error"] for r in results) else 0
