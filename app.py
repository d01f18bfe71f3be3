"""The web page (and Gradio API) of the deepfake face detector.

    python app.py                         # the bundled model, http://127.0.0.1:7860
    python app.py --model owner/name      # a model from the Hugging Face Hub (or DETECTOR_MODEL=...)

Privacy: an upload is read into memory and its file deleted before the analysis runs; the
pictures shown back are embedded in the page (data URIs), never written to disk. The page's report is
built in memory when asked for, from the last analysis the session holds in memory (for REPORT_TTL_S at
most), and saved by the browser; only the /report endpoint writes one (it holds the picture) into
Gradio's cache, for its download, and removes it after REPORT_TTL_S.
"""
from __future__ import annotations

import argparse
import collections
import csv
import functools
import html
import logging
import os
import tempfile
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import anyio.from_thread
import gradio as gr
from gradio.utils import get_upload_folder, is_in_or_equal

from detector import WHOLE_IMAGE, Analysis, Detector, DetectorError
from detector.evidence_report import (Evidence, decimals, limits, data_uri, decision_rule, examine,  # noqa: F401 (re-exported)
                                      good_photos, percent, probability_sentence, report_filename, report_html, shown_probabilities,
                                      verdict_headline)
from detector.images import FORMAT_NAMES, MAX_BYTES
from detector.logs import configure_logging
from detector.provenance import (LEVELS_NOTE, STRENGTH_WORDS, Finding, Strength, ai_level,
                                 fields as provenance_fields, summary as provenance_summary)
from detector.report import result_row, video_row
from detector.spectrum import analysed_region, spectrum
from detector.verdicts import VERDICT_COLOURS
from detector.video import (DEFAULT_FRAMES, FORMAT_NAMES as VIDEO_FORMAT_NAMES, MAX_DURATION_S, MAX_VIDEO_BYTES,
                            VIDEO_EXTENSIONS, VideoAnalysis, analyze_video)

EXAMPLES = sorted((Path(__file__).resolve().parent / "examples").glob("*.jpg"))
MAX_FILE_SIZE = f"{MAX_BYTES // 1024 // 1024}mb"
MAX_BATCH = 64
VIDEO_TYPES = list(VIDEO_EXTENSIONS)
logger = logging.getLogger("app")
OVERLAY_SIDE = 1024  # /analyze's optional overlay picture: long side at most this many pixels
VIDEO_LIMIT_MB = min(MAX_BYTES, MAX_VIDEO_BYTES) // 1024 // 1024  # the server's upload limit applies to videos too
TOP_FRAMES = 4
BATCH_COLUMNS = ["file", "verdict", "p_fake", "error"]  # the Batch tab's table and the first columns of its CSV
QUEUE_SIZE = 32  # requests waiting at most; one more gets Gradio's "Queue is full" answer at once
# The probabilities' bars, without the widget's heading: it names the more probable class, which says "fake" for a
# score between 50% and the threshold that the verdict below does not flag. The verdict's headline is the reading's.
LABEL_ARGS = {"label": "The model's probabilities", "num_top_classes": 2, "show_heading": False}
CONCURRENCY_LIMIT = 1  # analyses at a time: one model, and on CPU one forward already uses every core
DISPLAY_SIDE = 1600  # pictures sent back to the browser are at most this wide or tall
THUMBNAIL_SIDE = 360
REPORT_TTL_S = 300  # a /report file (it holds the picture) stays in Gradio's cache this long for its download; the
# page's last analysis stays in the session's memory this long, for its report
REPORT_EXPIRED = "The analysis is more than 5 minutes old: analyse the photo again to download its report."
# The page's report: built when the button is pressed (building it with every result cost 14-20% of the request,
# benchmarks/report_cost.py), sent to the browser and saved from memory (a Blob), never written on the server.
SAVE_REPORT_JS = """(report) => {
    if (!report || !report.html) return;
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([report.html], {type: "text/html"}));
    link.download = report.name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}"""


# --- uploads ----------------------------------------------------------------------------------


class UploadCounts(set):
    """A demo's set of uploaded paths (Gradio's `Blocks.upload_file_set`) that also counts uploads per path.

    Gradio keeps an upload at <cache>/<sha256 of its bytes>/<name>, so people who send the same photo
    under the same name at the same time share one file: only the last of their requests deletes it.
    The counts are shared by every demo in the process, as the cache folder is.
    """

    counts: collections.Counter = collections.Counter()
    lock = threading.Lock()

    def update(self, *groups) -> None:  # Gradio's upload route calls this once per upload request
        groups = [list(group) for group in groups]
        with self.lock:
            self.counts.update(os.path.normpath(path) for group in groups for path in group)
        super().update(*groups)

    def __isub__(self, purged):  # delete_cache purged these abandoned uploads: forget them, and their folders
        with self.lock:
            for path in purged:
                self.counts.pop(os.path.normpath(path), None)
        for path in purged:
            remove_empty_folder(Path(path).parent)  # its name is the sha256 of the upload's bytes
        return super().__isub__(purged)

    @classmethod
    def release(cls, path: str) -> bool:
        """A request is done with `path`: True when no other pending request uploaded the same file."""
        key = os.path.normpath(path)
        with cls.lock:
            remaining = cls.counts.pop(key, 1) - 1
            if remaining > 0:
                cls.counts[key] = remaining
        return remaining <= 0


def track_uploads(demo: gr.Blocks) -> None:
    """Count `demo`'s uploads (without Gradio's attribute, each request deletes its file, as before)."""
    gradio_set = getattr(demo, "upload_file_set", None)
    if isinstance(gradio_set, set) and not isinstance(gradio_set, UploadCounts):
        counted = UploadCounts(gradio_set)
        demo.temp_file_sets = [counted if s is gradio_set else s for s in demo.temp_file_sets]
        demo.upload_file_set = counted


def consume_upload(path: str) -> bytes:
    """Read an uploaded file into memory and delete it (and its folder) from Gradio's cache.

    Only files inside the cache are deleted (an API caller may name a static example file)."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise DetectorError("The upload is no longer available: please upload the image again.") from None
    finally:
        on_event_loop(lambda: forget_upload(file))
    return data


def forget_upload(file: Path) -> None:
    if UploadCounts.release(str(file)) and is_in_or_equal(str(file), get_upload_folder()):
        file.unlink(missing_ok=True)
        remove_empty_folder(file.parent)


def on_event_loop(function) -> None:
    """Run `function` on the server's event loop, from the worker thread an event runs in (else right here).

    Gradio's upload route creates an upload's folder, moves the file in and records it without yielding to
    the loop, so a deletion run on the loop never lands in between (and never deletes a fresh upload)."""
    try:
        anyio.from_thread.run_sync(function)
    except RuntimeError as err:  # "not running inside an AnyIO worker thread": a direct call
        if "worker thread" not in str(err):
            raise
        function()


def remove_empty_folder(folder: Path) -> None:
    """Remove an upload's folder in Gradio's cache once it is empty."""
    if folder != Path(get_upload_folder()) and is_in_or_equal(str(folder), get_upload_folder()):
        try:
            folder.rmdir()
        except OSError:  # not empty (another upload of the same bytes) or already gone
            pass


def display_name(path: str) -> str:
    """The uploaded file's own name, never a path."""
    return Path(str(path).replace("\\", "/")).name


# --- presentation -------------------------------------------------------------------------------


def views_html(analysis: Analysis) -> str:
    """original → activation map → overlay, side by side."""
    original, heat, overlay = analysis.render(max_side=DISPLAY_SIDE)
    figures = [
        ("Original", data_uri(original, "JPEG"), "original"),
        (f"Activation map ({analysis.explained})", data_uri(heat, "PNG"), "activation-map"),
        ("Overlay", data_uri(overlay, "JPEG"), "overlay"),
        ("Frequency spectrum", data_uri(spectrum(analysed_region(analysis)), "PNG"), "spectrum"),
    ]
    cells = "".join(
        f'<figure style="margin:0;flex:1;min-width:180px"><img id="{key}" alt="{title}" src="{uri}" '
        f'style="width:100%;border-radius:6px"/><figcaption style="text-align:center">{title}</figcaption></figure>'
        for title, uri, key in figures
    )
    return f'<div class="views" style="display:flex;gap:12px;flex-wrap:wrap">{cells}</div>'


def reading(analysis: Analysis, detector: Detector, findings: list[Finding] | None = None) -> str:
    """A short plain-language reading of the verdict, the score and the rule behind it, and (given the provenance
    findings) what the file declares beside it: metadata never changes the model's probabilities."""
    p_fake = analysis.p_fake
    digits = decimals(p_fake, detector)  # the score and the thresholds rounded alike: "82%" never against "≥ 82%"
    verdict = f"### {verdict_headline(analysis.verdict, p_fake, digits=digits)}\n\n"  # the only headline (LABEL_ARGS)
    declared = ""
    if findings is not None:
        level = ai_level(findings)  # the page's mark, the report's colour and the JSON's provenance_level agree
        icon = f"{STRENGTH_ICONS[level]} " if level else ""
        declared = f"{icon}**What the file declares:** {provenance_summary(findings)}\n\n"
    return (
        f"{verdict} {probability_sentence(p_fake, digits, face=bool(analysis.faces))} {decision_rule(detector, p_fake)}\n\n"
        f"{declared}{faces_line(analysis)}"
        f"Red areas in the activation map are where the evidence for *{analysis.explained}* came from.\n\n"
        f"_Limits:_ {limits(detector)}"
    )


def faces_line(analysis: Analysis) -> str:
    """What was analysed: the faces found (framed on the pictures), or the whole image and why."""
    if analysis.note == WHOLE_IMAGE:
        return f"⚠️ The whole image was analysed (face search off): {WHOLE_IMAGE.split('; ', 1)[1]}.\n\n"
    if analysis.note:
        return f"⚠️ **{analysis.note[0].upper() + analysis.note[1:]}.** Crop the face if there is one.\n\n"
    if len(analysis.faces) == 1:
        return "One face was found and analysed; it is framed on the pictures.\n\n"
    return (f"**{len(analysis.faces)} faces** were found and analysed one by one; the verdict is the most "
            "suspicious face's. Each face is framed in its verdict's colour (red fake, green real) with its p_fake.\n\n")


STRENGTH_ICONS = {Strength.STRONG: "🔴", Strength.DECLARED: "🟠", Strength.WEAK: "🟡", Strength.WARNING: "⚠️",
                  Strength.INFO: "ℹ️", Strength.ERROR: "❔"}
STRENGTH_MARKS = {strength: f"{STRENGTH_ICONS[strength]} **{words[0].upper() + words[1:]}**"
                  for strength, words in STRENGTH_WORDS.items()}


def markdown_text(text: str) -> str:
    """Metadata text (it comes from the file) shown literally: HTML escaped, Markdown's markers neutralised."""
    escaped = html.escape(" ".join(str(text).split()))
    return "".join("\\" + ch if ch in "\\`*_{}[]()#+-.!|<>~" else ch for ch in escaped)


def provenance_markdown(findings: list[Finding]) -> str:
    """The provenance panel: each finding with its strength and source, then how to read them."""
    lines = [f"- {STRENGTH_MARKS.get(f.strength, f.strength)} ({f.source}): {markdown_text(f.message)}" for f in findings]
    return ("### What the file declares\n" + "\n".join(lines) + "\n\n"
            f"_{LEVELS_NOTE} Missing metadata is never evidence that it is real: most sites and apps remove it. A "
            "camera name or editor is easy to write. None of it changes the model's probabilities._")


def gallery_html(items: list[tuple[str, Analysis]]) -> str:
    """Overlay thumbnails with their verdicts; file names are escaped (they come from the uploader)."""
    cards = "".join(
        f'<figure style="margin:0;width:180px"><img alt="{html.escape(name)}" '
        f'src="{data_uri(a.render(max_side=THUMBNAIL_SIDE)[2], "JPEG")}" style="width:100%;border-radius:6px"/>'
        f'<figcaption style="font-size:0.85em">{html.escape(name)}<br/><b>{a.verdict}</b> (p_fake {a.p_fake:.2f})'
        "</figcaption></figure>"
        for name, a in items
    )
    return f'<div class="batch-gallery" style="display:flex;gap:10px;flex-wrap:wrap">{cards}</div>'


# --- what the events call -----------------------------------------------------------------------


def logged(handler):
    """An event handler whose unexpected errors are logged on the server with their traceback, while the person
    sees a plain message (errors they caused already arrive as gr.Error with the reason)."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except Exception:
            logger.exception("unexpected error in %s", handler.__name__)
            raise gr.Error("Something went wrong on the server while analysing this file; the error was logged. "
                           "Please try again, or try another file.", print_exception=False) from None

    return wrapper


def analyze_file(detector: Detector, path: str | None, whole_image: bool = False) -> tuple[Analysis, str]:
    """Faces found and judged one by one (the verdict is the most suspicious face), or the whole image."""
    if not path:
        raise DetectorError(f"No image received: upload a {FORMAT_NAMES} photo.")
    return detector.analyze(consume_upload(path), faces=not whole_image), display_name(path)


def examine_upload(detector: Detector, path: str | None, whole_image: bool = False) -> Evidence:
    """The upload's original bytes: provenance read first, then the analysis (the file is deleted before either)."""
    if not path:
        raise DetectorError(f"No image received: upload a {FORMAT_NAMES} photo.")
    return examine(detector, consume_upload(path), display_name(path), faces=not whole_image)


def write_report(evidence: Evidence, detector: Detector) -> str:
    """The report, written into Gradio's cache (served from there as is) and removed after REPORT_TTL_S; the cache
    purge (delete_cache) removes it too, and everything left when the server stops."""
    folder = Path(tempfile.mkdtemp(prefix="report-", dir=get_upload_folder()))
    path = folder / report_filename(evidence.name)
    path.write_text(report_html(evidence, detector), encoding="utf-8")
    timer = threading.Timer(REPORT_TTL_S, remove_report, [path])
    timer.daemon = True
    timer.start()
    return str(path)


def remove_report(path: Path) -> None:
    path.unlink(missing_ok=True)
    remove_empty_folder(path.parent)


def page_outputs(detector: Detector, evidence: Evidence | None, error: str | None = None, report: bool = True):
    """Label, pictures, reading, provenance panel, the evidence its report is built from when asked (the session's
    state, in memory), and the visibility of the report's button."""
    if evidence is None:
        return None, "", f"⚠️ **This file could not be analysed.** {error}", "", None, gr.Button(visible=False)
    return (*page_result(evidence.analysis, detector, evidence.findings), provenance_markdown(evidence.findings),
            evidence if report else None, gr.Button(visible=report))


def report_for_page(detector: Detector, evidence: Evidence | None) -> dict | None:
    """The report of the page's last analysis, {name, html}, for the browser to save; built in memory, never on disk.
    Its evidence is held for REPORT_TTL_S: after that, a notice asks for the photo again."""
    if evidence is None:
        gr.Warning(REPORT_EXPIRED)
        return None
    return {"name": report_filename(evidence.name), "html": report_html(evidence, detector)}


@logged
def evidence_for_page(detector: Detector, path: str | None, whole_image: bool = False, report: bool = True):
    """Single tab: label, pictures, reading, provenance and the report; an error becomes the reading."""
    try:
        evidence = examine_upload(detector, path, whole_image)
    except DetectorError as err:
        return page_outputs(detector, None, str(err))
    return page_outputs(detector, evidence, report=report)


def analyze_for_page(detector: Detector, path: str | None, whole_image: bool = False):
    """Single tab: label, pictures and the reading; an error becomes the reading."""
    return evidence_for_page(detector, path, whole_image, report=False)[:3]


def page_result(analysis: Analysis, detector: Detector, findings: list[Finding] | None = None):
    """What the single-image tab shows: the probabilities' bars in the verdict's colour, the pictures, the reading."""
    return (probabilities_label(analysis.probabilities, analysis.verdict), views_html(analysis),
            reading(analysis, detector, findings))


def verdict_class(verdict: str) -> str:
    """The CSS class of a verdict's colour ("likely fake" → "verdict-likely-fake")."""
    return "verdict-" + verdict.replace(" ", "-")


# The Label's bars take their colour from --stat-background-fill: each verdict's class sets it to the verdict's colour.
VERDICT_CSS = "\n".join(f".{verdict_class(verdict)} {{ --stat-background-fill: rgb{colour}; }}"
                        for verdict, colour in VERDICT_COLOURS.items())


def probabilities_label(probabilities: dict[str, float], verdict: str) -> gr.Label:
    """The probabilities' bars (held within 1-99%), coloured by the verdict: red likely fake, amber uncertain, green
    likely real, so that the bar a person reads agrees with the headline."""
    return gr.Label(value=shown_probabilities(probabilities), elem_classes=["probabilities", verdict_class(verdict)])


@logged
def analyze_for_api(detector: Detector, path: str | None, whole_image: bool = False, overlay: bool = False) -> dict:
    """JSON result for one image, with the CAMs (per face too) and, when asked, the overlay picture as a PNG data
    URI; a bad image raises a gr.Error with the reason."""
    try:
        evidence = examine_upload(detector, path, whole_image)
    except DetectorError as err:
        raise gr.Error(str(err), print_exception=False) from None
    analysis = evidence.analysis
    row = result_row(evidence.name, analysis, cams=True)
    row.update(provenance_fields(evidence.findings))
    if overlay:
        row["overlay"] = data_uri(analysis.render(max_side=OVERLAY_SIDE)[2], "PNG")
    return row


def analyze_many(detector: Detector, paths: list[str] | None, whole_image: bool = False,
                 progress=None) -> list[tuple[str, Analysis | None, str | None]]:
    """(name, analysis, error) per file, in order; one bad file does not stop the others.
    `progress(done, total)` is called before each file."""
    paths = list(paths or [])
    if len(paths) > MAX_BATCH:
        raise gr.Error(f"{len(paths)} files: at most {MAX_BATCH} at once.", print_exception=False)
    results = []
    for done, path in enumerate(paths):
        if progress:
            progress(done, len(paths))
        try:
            analysis, name = analyze_file(detector, path, whole_image)
            results.append((name, analysis, None))
        except DetectorError as err:
            results.append((display_name(path), None, str(err)))
    return results


@logged
def report_for_api(detector: Detector, path: str | None, whole_image: bool = False) -> str:
    """The HTML report of one image (a file in Gradio's cache, removed after REPORT_TTL_S)."""
    try:
        evidence = examine_upload(detector, path, whole_image)
    except DetectorError as err:
        raise gr.Error(str(err), print_exception=False) from None
    return write_report(evidence, detector)


@logged
def example_for_page(detector: Detector, index: int, whole_image: bool = False, report: bool = True):
    """Examples are repository files: read them directly (they are not uploads, so never deleted)."""
    example = EXAMPLES[index]
    return page_outputs(detector, examine(detector, example.read_bytes(), example.name, faces=not whole_image),
                        report=report)


def analyze_for_page_example(detector: Detector, index: int, whole_image: bool = False):
    return example_for_page(detector, index, whole_image, report=False)[:3]


@logged
def batch_for_api(detector: Detector, paths: list[str] | None, whole_image: bool = False) -> list[dict]:
    return [result_row(name, analysis, error) for name, analysis, error in analyze_many(detector, paths, whole_image)]


@logged
def batch_for_page(detector: Detector, paths: list[str] | None, whole_image: bool = False, progress=None):
    report = (lambda done, total: progress((done, total), desc="Analysing photos", unit="photos")) if progress else None
    results = analyze_many(detector, paths, whole_image, report)
    rows = [result_row(name, analysis, error) for name, analysis, error in results]
    table = [[r["file"], r["verdict"] or "error", "" if r["error"] else round(r["probabilities"]["fake"], 4), r["error"] or ""]
             for r in rows]
    # Inside Gradio's cache, so it is served without a copy and purged with the cache (delete_cache).
    with tempfile.NamedTemporaryFile("w", suffix=".csv", prefix="detections-", dir=get_upload_folder(),
                                     delete=False, newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*BATCH_COLUMNS, "label"])  # label (real/fake) last, for scripts that read it
        writer.writerows([*line, r["label"] or ""] for line, r in zip(table, rows))
    gallery = gallery_html([(name, analysis) for name, analysis, _ in results if analysis])
    return gallery, table, gr.DownloadButton(value=f.name, visible=True)


def analyze_video_file(detector: Detector, path: str | None, frames: int | float | None = DEFAULT_FRAMES,
                       every_second: bool = False, whole_image: bool = False, progress=None) -> tuple[VideoAnalysis, str]:
    """The upload is read into memory and deleted before decoding; only the sampled frames are decoded."""
    if not path:
        raise DetectorError(f"No video received: upload an {VIDEO_FORMAT_NAMES} file.")
    data = consume_upload(path)
    return analyze_video(detector, data, frames=int(frames or DEFAULT_FRAMES), every_seconds=1.0 if every_second else None,
                         faces=not whole_image, keep=TOP_FRAMES, progress=progress), display_name(path)


@logged
def video_for_api(detector: Detector, path: str | None, frames=DEFAULT_FRAMES, every_second=False, whole_image=False) -> dict:
    """JSON result for one video (frames flagged of frames read, the most suspicious frame, every frame's result; no
    verdict on the video as a whole); a bad video raises a gr.Error with the reason."""
    try:
        video, name = analyze_video_file(detector, path, frames, every_second, whole_image)
    except DetectorError as err:
        raise gr.Error(str(err), print_exception=False) from None
    return video_row(name, video)


@logged
def video_for_page(detector: Detector, path, frames, every_second, whole_image, progress=None):
    """Video tab: the reading (frames flagged of frames read, the rule), the timeline and the most suspicious frames;
    an error becomes the reading."""
    report = (lambda done, total: progress((done, total), desc="Analysing frames", unit="frames")) if progress else None
    try:
        video, _ = analyze_video_file(detector, path, frames, every_second, whole_image, report)
    except DetectorError as err:
        return f"⚠️ **This video could not be analysed.** {err}", ""
    return video_reading(video, detector), video_html(video)


def video_reading(video: VideoAnalysis, detector: Detector) -> str:
    """What a video gets: the frames flagged of the frames read and the most suspicious frame, never a verdict."""
    info, top = video.info, video.most_suspicious
    lines = [
        f"### {video.summary}",
        f"The most suspicious frame: {top.time:.2f} s (frame {top.index}), p(fake) {percent(top.p_fake)}.",
        f"_Rule:_ {video.rule[0].upper() + video.rule[1:]}",
        f"{video.frames_read} frames read of {info.frame_count} ({info.duration:.1f} s, {info.width}×{info.height}, "
        f"{info.fps:.1f} fps).",
    ]
    if video.frames_without_face:
        lines.append(f"⚠️ No face was found in {video.frames_without_face} of them: those frames were analysed whole, "
                     "and the model was trained on faces.")
    if video.undecodable:
        lines.append(f"{video.undecodable} sampled frames could not be decoded and were skipped.")
    lines.append(f"_Limits:_ {limits(detector)}")
    return "\n\n".join(lines)


def video_html(video: VideoAnalysis) -> str:
    """The timeline, then the most suspicious frames with their overlays and face boxes (all embedded)."""
    timeline = f'<img id="timeline" alt="p_fake over time" src="{data_uri(video.timeline(), "PNG")}" style="width:100%"/>'
    cards = "".join(
        f'<figure style="margin:0;width:220px"><img alt="frame {frame.index}" '
        f'src="{data_uri(analysis.render(max_side=THUMBNAIL_SIDE)[2], "JPEG")}" style="width:100%;border-radius:6px"/>'
        f'<figcaption style="font-size:0.85em">{frame.time:.2f} s (frame {frame.index})<br/>'
        f"<b>{'flagged' if frame.flagged else 'not flagged'}</b> (p_fake {frame.p_fake:.2f})</figcaption></figure>"
        for frame, analysis in video.top_frames
    )
    return (f'<div class="video-report">{timeline}<h4>Most suspicious frames</h4>'
            f'<div class="top-frames" style="display:flex;gap:10px;flex-wrap:wrap">{cards}</div></div>')


def model_card(detector: Detector) -> str:
    card = detector.loaded.folder / "README.md"
    if not card.is_file():
        return "This model folder has no model card (README.md)."
    text = card.read_text()
    if text.startswith("---"):  # YAML front matter is for the Hub, not for people
        text = text.split("---", 2)[2]
    return text


# --- the page ---------------------------------------------------------------------------------


def build_demo(detector: Detector) -> gr.Blocks:
    # Examples are served from the repository, never copied into the upload cache: an upload with the
    # same bytes would otherwise share (and delete) the cached copy the page shows.
    gr.set_static_paths(paths=EXAMPLES)
    with gr.Blocks(title="Deepfake face detector", delete_cache=(120, 300)) as demo:
        gr.Markdown(
            "# Is this face real?\n"
            "Drop a photo of a face: the model says how likely it is to be generated or manipulated, "
            f"and shows where it looked. Images are analysed in memory and never stored.\n\n"
            f"**Model:** `{detector.name}`"
        )
        with gr.Tab("Single image"):
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.File(label=f"Face photo ({FORMAT_NAMES}, up to {MAX_BYTES // 1024 // 1024} MB)", file_count="single")
                    camera = gr.Image(label="Or take a photo with the camera, or paste one (Ctrl+V)", type="filepath",
                                      sources=["webcam", "clipboard"], image_mode=None, elem_id="camera")
                    whole = gr.Checkbox(label="Whole image: no face search (applies to the next upload or example)")
                    examples = gr.Dataset(
                        label="Or try an example", components=[gr.Image(visible=False)],
                        samples=[[str(p)] for p in EXAMPLES], type="index", layout="gallery",
                    )
                with gr.Column(scale=1):
                    label = gr.Label(**LABEL_ARGS)
                    verdict = gr.Markdown()
                    report_button = gr.Button("Download the report (HTML, printable to PDF)", visible=False,
                                              elem_id="report")
                    report_data = gr.JSON(visible=False)  # {name, html}: the browser saves it, the server keeps nothing
                    evidence = gr.State(time_to_live=REPORT_TTL_S)  # the last analysis, in memory, for its report
            views = gr.HTML()
            provenance_panel = gr.Markdown(elem_id="provenance")
        with gr.Tab("Batch"):
            uploads = gr.File(label=f"Many photos (up to {MAX_BATCH})", file_count="multiple")
            batch_whole = gr.Checkbox(label="Whole images: no face search")
            batch_button = gr.Button("Analyse all", variant="primary")
            table = gr.Dataframe(headers=BATCH_COLUMNS, label="Results", interactive=False)
            download = gr.DownloadButton("Download CSV", visible=False)
            gallery = gr.HTML()
        with gr.Tab("Video"):
            with gr.Row():
                with gr.Column(scale=1):
                    video_upload = gr.File(
                        label=f"Video ({VIDEO_FORMAT_NAMES}; up to {VIDEO_LIMIT_MB} MB and {MAX_DURATION_S // 60} minutes, "
                              "frames up to 4K)", file_count="single", file_types=VIDEO_TYPES)
                    video_frames = gr.Slider(4, 128, value=DEFAULT_FRAMES, step=1, label="Frames to sample, spread evenly")
                    video_every_second = gr.Checkbox(label="One frame per second instead")
                    video_whole = gr.Checkbox(label="Whole frames: no face search")
                    video_button = gr.Button("Analyse video", variant="primary")
                with gr.Column(scale=1):
                    video_text = gr.Markdown()
            video_views = gr.HTML()
        with gr.Tab("About the model"):
            gr.Markdown(model_card(detector))

        page = dict(outputs=[label, views, verdict, provenance_panel, evidence, report_button],
                    api_visibility="private", concurrency_id="model")

        def on_report(last):
            """The report of the last analysis, built now and saved by the browser."""
            return report_for_page(detector, last)

        report_button.click(on_report, [evidence], [report_data], api_visibility="private").then(
            None, [report_data], None, js=SAVE_REPORT_JS, api_visibility="private")
        upload.upload(lambda path, whole_image: evidence_for_page(detector, path, whole_image), [upload, whole], **page)

        def on_camera(path, whole_image):
            """A webcam snapshot or a pasted picture: analysed like an upload (and deleted the same way)."""
            if not path:  # the picture was cleared
                return (gr.skip(),) * 6
            return evidence_for_page(detector, path, whole_image)

        camera.input(on_camera, [camera, whole], **page)
        examples.click(lambda index, whole_image: example_for_page(detector, index, whole_image), [examples, whole],
                       **page)
        def on_batch(paths, whole_image, progress=gr.Progress()):
            return batch_for_page(detector, paths, whole_image, progress)

        batch_button.click(on_batch, [uploads, batch_whole], [gallery, table, download], api_visibility="private",
                           concurrency_id="model")

        # Named endpoints for gradio_client: JSON in, JSON out, on components the page never shows.
        api_file, api_files, api_result = gr.File(visible=False), gr.File(file_count="multiple", visible=False), gr.JSON(visible=False)
        api_single, api_batch = gr.Button(visible=False), gr.Button(visible=False)
        api_whole = gr.Checkbox(False, label="whole_image", visible=False)  # optional: True skips the face search
        api_overlay = gr.Checkbox(False, label="overlay", visible=False)  # optional: True adds the overlay picture

        def analyze(path, whole_image=False, overlay=False):
            """Is the face in this photo real or generated? Finds the faces (unless whole_image), judges each, and
            returns the verdict of the most suspicious one: label, calibrated probabilities, and each face's box and
            Grad-CAM grid; with overlay=True also the heat-map overlay as a PNG data URI; and `provenance`, what the
            file itself declares (C2PA Content Credentials, IPTC DigitalSourceType, generator traces), each finding with
            its source, kind, strength and message, with `provenance_level` (strong, declared, weak or null) and
            `provenance_summary`, as the page says them. A file that is not a readable JPEG, PNG, WebP, GIF or HEIC
            photo (up to 10 MB) raises an error that says why."""
            return analyze_for_api(detector, path, whole_image, overlay)

        def analyze_batch(paths, whole_image=False):
            """Many photos at once: one result per file, in order. A bad file gets its reason in `error` and the
            others are still analysed."""
            return batch_for_api(detector, paths, whole_image)

        def analyze_video(path, frames=DEFAULT_FRAMES, every_second=False, whole_image=False):
            """A video (MP4, WebM or MOV): `frames` frames spread evenly (or one per second), each judged by its
            most suspicious face; how many of the frames read were flagged at the image threshold (`summary`: "3 of
            32 frames flagged ..."), the most suspicious frame, and every frame's result. No verdict is given for the
            video as a whole: no video-level threshold has been fitted."""
            return video_for_api(detector, path, frames, every_second, whole_image)

        def report(path, whole_image=False):
            """A self-contained HTML report of one photo, printable to PDF: the verdict and calibrated probability with
            the decision rule, the model's id, revision and weights hash, the file's sha256 and size, every face with
            its box, probabilities and overlay, what the file declares (provenance), the frequency spectrum and the
            model's known limits. The file is removed from the server a few minutes after it is made."""
            return report_for_api(detector, path, whole_image)

        api_single.click(analyze, [api_file, api_whole, api_overlay], api_result, api_name="analyze", concurrency_id="model")
        api_report_file, api_report = gr.File(visible=False), gr.Button(visible=False)
        api_report.click(report, [api_file, api_whole], api_report_file, api_name="report", concurrency_id="model")
        api_batch.click(analyze_batch, [api_files, api_whole], api_result, api_name="analyze_batch", concurrency_id="model")
        api_video, api_frames = gr.File(visible=False), gr.Number(DEFAULT_FRAMES, precision=0, visible=False)
        api_every_second, api_video_button = gr.Checkbox(False, visible=False), gr.Button(visible=False)
        api_video_button.click(analyze_video, [api_video, api_frames, api_every_second, api_whole], api_result,
                               api_name="analyze_video", concurrency_id="model")

        def on_video(path, frames, every_second, whole_image, progress=gr.Progress()):
            return video_for_page(detector, path, frames, every_second, whole_image, progress)

        video_button.click(on_video, [video_upload, video_frames, video_every_second, video_whole],
                           [video_text, video_views], api_visibility="private", concurrency_id="model")
    track_uploads(demo)
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """Queue and limits set here, so tests launch the app exactly as users get it."""
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo.launch(max_file_size=MAX_FILE_SIZE, show_error=True, footer_links=["api"], css=VERDICT_CSS, **kwargs)


def load_detector(source: str | None) -> Detector:
    """The detector the app serves: the model named (else $DETECTOR_MODEL or the bundled one), its heat map from the
    stage its config names (the one measured more faithful for it: training.publish --cam-faithfulness)."""
    return Detector.from_pretrained(source)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Run the deepfake detector web app.")
    parser.add_argument("--model", help="model folder or Hub id (default: $DETECTOR_MODEL or the bundled model)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    configure_logging()
    try:
        detector = load_detector(args.model)
    except DetectorError as err:
        raise SystemExit(f"Cannot start: {err}") from None
    detector.warm_up()
    launch(build_demo(detector), server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
