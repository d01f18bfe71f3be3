"""One self-contained HTML report per analysis: what the model saw, what the file declares, and how to read both.

    from detector.evidence_report import examine, report_html
    evidence = examine(detector, data, "photo.jpg")      # provenance of the original bytes, then the analysis
    Path("photo.report.html").write_text(report_html(evidence, detector))

The report inlines every picture as a data URI (no other file, no network), prints to PDF from a browser, and
holds: the verdict and calibrated probability with the decision rule, the model (id, revision, weights sha256),
the input (name, sha256, size), every face with its box, probabilities and overlay, the provenance findings, the
frequency view, and the model's known limits. The app (a download and the `/report` endpoint) and the CLI
(`--report DIR`) write the same file. The plain-language texts the page shows (`decision_rule`, `limits`) live
here so that every door says the same thing.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from . import provenance
from .detector import Analysis, Detector
from .verdicts import LIKELY_FAKE, LIKELY_REAL, UNCERTAIN, threshold_rule
from .model import hub_revision, weights_sha256
from .spectrum import analysed_region, spectrum

REPORT_SIDE = 1024  # pictures in a report: long side at most this many pixels
FACE_SIDE = 256
def limits(detector: Detector) -> str:
    """The model's known limits in plain words, with the number of photos it was trained on when its config says."""
    trained = (f"The model was trained on {detector.training_images:,} face photos from public datasets. "
               if detector.training_images else "The model was trained on face photos from public datasets. ")
    return trained + LIMITS


LIMITS = (
    "It can be wrong, "
    "especially on pictures unlike those (heavy compression, drawings, several faces, no face), and it misses "
    "most fakes made by a generator, face swap or edit that was not in its training data: models trained the "
    "same way, each tested on one such kind it had not seen, did little better than chance. It also goes by how a "
    "face is framed: a generated face cropped tighter or set in a wider frame than its generator made it is often "
    "missed, and a real photo framed the way a generator frames its faces is more often called fake. Treat the score as "
    "one piece of evidence, never as proof. The heat map shows where the model's evidence came from, not what "
    "was edited."
)
SPECTRUM_NOTE = (
    "The log-magnitude Fourier spectrum of the analysed face (or the whole image): low frequencies in the centre, "
    "high ones at the edges. Generators that up-sample can leave bright, regularly spaced peaks away from the "
    "centre; camera photos fall off smoothly. It is a view, not a test: JPEG compression leaves an 8-pixel grid "
    "too, and resizing moves or hides the peaks."
)


def decision_rule(detector: Detector, p_fake: float | None = None) -> str:
    """What the thresholds mean: the rules stored with the model and what was measured beside them
    (`verdicts.threshold_rule`, the sentences the README prints too), then what it does on good real photos unlike its
    training data. Given the `p_fake` shown beside it, the thresholds are written with as many decimals as that score
    (`decimals`), so that the comparison the sentence states stays true when both are rounded (82% against "flags at
    82%" for a score just under the threshold)."""
    digits = decimals(p_fake, detector) if p_fake is not None else 0
    rule = threshold_rule(detector.loaded.config.get("calibration"), digits)
    return rule if detector.threshold is None else rule + good_photos(detector)


def decimals(p_fake: float, detector: Detector) -> int:
    """The fewest decimals of a percent (0 to 3) at which `p_fake` and each of the detector's thresholds, both
    rounded, still compare as they really do."""
    thresholds = [t for t in (detector.threshold, detector.lower_threshold) if t is not None]
    for digits in range(4):
        shown = lambda value: round(value * 100, digits)
        if all((shown(p_fake) >= shown(t)) == (p_fake >= t) for t in thresholds):
            return digits
    return 3


def percent(p: float, digits: int = 0) -> str:
    """A model's probability as people read it: whole percents (or `digits` decimals), but never "100%" or "0%",
    which would claim certainty."""
    if round(p * 100, digits) >= 100 or p >= 0.995 and digits == 0:
        return "more than 99%"
    if round(p * 100, digits) <= 0 or p < 0.005 and digits == 0:
        return "less than 1%"
    return f"{p * 100:.{digits}f}%"


SHOWN_RANGE = (0.01, 0.99)  # a widget that rounds to whole percents reads these as 1% and 99%


def shown_probabilities(probabilities: dict[str, float]) -> dict[str, float]:
    """Probabilities for a widget that rounds to whole percents (Gradio's `Label`): held within 1%-99%, so that,
    as with `percent`, a score of 0.997 never reads "100%", a certainty the model cannot have."""
    low, high = SHOWN_RANGE
    return {name: min(max(p, low), high) for name, p in probabilities.items()}


def probability_sentence(p_fake: float, digits: int = 0, face: bool = True) -> str:
    """The score in words: of "this face" when a face was judged, of "this image" when the whole image was."""
    subject = "this face" if face else "this image"
    return (f"The model's probability that {subject} is fake: {percent(p_fake, digits)} (that it is real: "
            f"{percent(1 - p_fake, digits)}).")


VERDICT_CLASSES = {LIKELY_FAKE: "fake", UNCERTAIN: "uncertain", LIKELY_REAL: "real"}  # the report's CSS classes


def verdict_headline(verdict: str, p_fake: float, real: str = "a real photo", digits: int = 0) -> str:
    """The three-level verdict in plain words with the probability beside it (`real`: what a real one is, "a real
    photo" or "a real video"). Its words follow the verdict, and the verdict follows the number: "likely real" is
    said only below the lower threshold, "likely fake" only at or above the threshold."""
    score = f"p(fake) {percent(p_fake, digits)}"
    if verdict == LIKELY_FAKE:
        return f"Likely fake: generated or manipulated ({score})"
    if verdict == LIKELY_REAL:
        return f"Likely {real} ({score})"
    return f"Uncertain: the model cannot tell whether this is {real} or a fake ({score})"


def good_photos(detector: Detector) -> str:
    """What the model does on good real photos of kinds it never trained on, as measured (nothing when not measured)."""
    if not detector.unseen_reals:
        return ""
    parts = [f"{rate * 100:.0f} of 100 {name}" for name, rate in detector.unseen_reals.items()]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return (f" Good real photos unlike its training data can be called fake: models trained with the same recipe, "
            f"each without one of these kinds, flagged {listed} (leave-one-source-out test, face search).")


@dataclass
class Evidence:
    """One file examined: its name, hash and size, what it declares (`findings`) and what the model says."""

    name: str
    sha256: str
    size: int
    analysis: Analysis
    findings: list[provenance.Finding] = field(default_factory=list)
    created: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))

    @property
    def declares_ai(self) -> bool:
        return provenance.declares_ai(self.findings)


def examine(detector: Detector, data: bytes, name: str, faces: bool = True) -> Evidence:
    """Provenance of the original bytes first (before any decoding), then the analysis of the same bytes.
    Bad input raises `DetectorError` from the analysis; bad metadata only gives findings."""
    findings = provenance.check(data, name)
    analysis = detector.analyze(data, faces=faces)
    return Evidence(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data), analysis=analysis,
                    findings=findings)


# --- the model's identity ---------------------------------------------------------------------------------


def model_identity(detector: Detector) -> dict:
    """id, revision (the Hub commit when the folder is a Hub snapshot) and the weights file's sha256."""
    folder = detector.loaded.folder
    return {"model": detector.name, "revision": hub_revision(folder) or "local folder (no Hub revision)",
            "weights_sha256": weights_sha256(folder) or "missing", "threshold": detector.threshold}


# --- the file ------------------------------------------------------------------------------------------


def report_filename(name: str) -> str:
    """A safe file name for `name`'s report: letters, digits, dot, dash and underscore only, never a path."""
    stem = Path(str(name).replace("\\", "/")).name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
    return f"{stem[:120]}.report.html"


def data_uri(image: Image.Image, fmt: str = "JPEG") -> str:
    """A picture as a data URI (JPEG at quality 90, or PNG), for pages and reports that hold their pictures."""
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image = image if image.mode in ("RGB", "L") else image.convert("RGB")
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _figure(title: str, image: Image.Image, key: str, fmt: str = "JPEG", caption: str = "") -> str:
    note = f"<br/><small>{html.escape(caption)}</small>" if caption else ""
    return (f'<figure id="{key}"><img alt="{html.escape(title)}" src="{data_uri(image, fmt)}"/>'
            f"<figcaption>{html.escape(title)}{note}</figcaption></figure>")


CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;max-width:980px;margin:24px auto;padding:0 16px}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:1.4em}
table{border-collapse:collapse;width:100%;margin:.4em 0}td,th{border:1px solid #ccc;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em;word-break:break-all}
.views{display:flex;gap:10px;flex-wrap:wrap}.views figure{flex:1;min-width:200px;margin:0}
figure img{width:100%;border-radius:4px}figcaption{text-align:center;font-size:.9em}
.verdict{font-size:1.2em;padding:10px 12px;border-radius:6px;border:2px solid}
.rule{font-size:.8em}.fake{border-color:#c62828;background:#fdecea}.real{border-color:#2e7d32;background:#edf7ee}
.uncertain{border-color:#b45309;background:#fff7e6}
.strong{color:#b71c1c;font-weight:bold}.declared{color:#bf360c;font-weight:bold}.weak{color:#8d6e00;font-weight:bold}
.warning{color:#e65100;font-weight:bold}
.error{color:#555;font-style:italic}.info{color:#333}.faces img{width:140px}.muted{color:#555;font-size:.9em}
@media print{body{margin:0;max-width:none;font-size:11pt}h2{break-after:avoid}figure,tr,.verdict{break-inside:avoid}
.views figure{min-width:0}a{color:inherit;text-decoration:none}}
@page{size:A4;margin:14mm}
"""


def report_html(evidence: Evidence, detector: Detector) -> str:
    """The whole report as one HTML document (UTF-8, no external resources)."""
    a, e = evidence.analysis, evidence
    digits = decimals(a.p_fake, detector)  # the score and the thresholds rounded alike
    original, heat, overlay = a.render(max_side=REPORT_SIDE)
    identity = model_identity(detector)
    rows = lambda pairs: "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    image_size = f"{a.image.width}×{a.image.height} pixels"
    declared = (f'<p class="{provenance.ai_level(e.findings) or "muted"}" id="declared"><b>What the file declares:</b> '
                f"{html.escape(provenance.summary(e.findings))}</p>")
    sections = [
        f"<h1>Deepfake face detector: report</h1>"
        f'<p class="muted">{html.escape(e.name)} · analysed {e.created.strftime("%Y-%m-%d %H:%M:%S UTC")}</p>',
        f'<div class="verdict {VERDICT_CLASSES[a.verdict]}" id="verdict"><b>{verdict_headline(a.verdict, a.p_fake, digits=digits)}.</b> '
        f"{html.escape(probability_sentence(a.p_fake, digits, face=bool(a.faces)))}<br/>"
        f"<span class='rule'>{html.escape(decision_rule(detector, a.p_fake))}</span></div>"
        + declared + (f"<p><b>Note:</b> {html.escape(a.note)}.</p>" if a.note else ""),
        _findings_section(e.findings),
        "<h2>Input</h2><table>" + rows([
            ("file name", html.escape(e.name)), ("sha256", f'<span class="mono">{e.sha256}</span>'),
            ("size", f"{e.size:,} bytes"), ("picture", image_size)]) + "</table>",
        "<h2>Model</h2><table>" + rows([
            ("model", html.escape(str(identity["model"]))), ("revision", html.escape(str(identity["revision"]))),
            ("weights sha256", f'<span class="mono">{identity["weights_sha256"]}</span>'),
            ("threshold", "0.5 (uncalibrated)" if identity["threshold"] is None else f"{identity['threshold']:.4f}"),
            ("explained class (heat map)", html.escape(a.explained))]) + "</table>",
        "<h2>What the model saw</h2>"
        '<div class="views">' + _figure("Original", original, "original")
        + _figure(f"Activation map ({a.explained})", heat, "activation-map", "PNG")
        + _figure("Overlay", overlay, "overlay") + "</div>"
        "<p class=\"muted\">Red areas are where the evidence for the explained class came from, not what was edited.</p>",
        _faces_section(a, overlay),
        "<h2>Frequency view</h2>"
        '<div class="views" style="max-width:420px">'
        + _figure("Spectrum of the analysed region", spectrum(analysed_region(a)), "spectrum", "PNG") + "</div>"
        f'<p class="muted">{html.escape(SPECTRUM_NOTE)}</p>',
        f"<h2>Known limits</h2><p>{html.escape(limits(detector))}</p>"
        '<p class="muted">Made by the open-source deepfake face detector. This report records one analysis; keep the '
        "original file with it: its sha256 above identifies it.</p>",
    ]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
            '<meta name="viewport" content="width=device-width,initial-scale=1"/>'
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\"/>"
            f"<title>Report: {html.escape(e.name)}</title><style>{CSS}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")


def _faces_section(a: Analysis, overlay: Image.Image) -> str:
    if not a.faces:
        what = a.note or "face search off: the whole image was analysed"
        return f"<h2>Faces</h2><p>None judged separately ({html.escape(what)}).</p>"
    scale = overlay.width / a.image.width
    rows = []
    for index, face in enumerate(sorted(a.faces, key=lambda f: -f.p_fake), 1):
        crop = overlay.crop(tuple(round(v * scale) for v in face.crop))
        crop.thumbnail((FACE_SIDE, FACE_SIDE))
        box = ", ".join(f"{v:.0f}" for v in face.box)
        rows.append(f'<tr><td>{index}</td><td><img alt="face {index}" src="{data_uri(crop)}"/></td>'
                    f"<td class=\"mono\">[{box}]</td><td><b>{face.label}</b></td>"
                    f"<td>{percent(face.probabilities['real'], 1)}</td><td>{percent(face.probabilities['fake'], 1)}</td></tr>")
    return ('<h2>Faces</h2><p class="muted">Most suspicious first; the verdict is the first one\'s. Box: left, top, '
            'right, bottom in the original\'s pixels.</p><table class="faces"><tr><th>#</th><th>overlay</th><th>box</th>'
            "<th>label</th><th>p_real</th><th>p_fake</th></tr>" + "".join(rows) + "</table>")


def _findings_section(findings: list[provenance.Finding]) -> str:
    rows = "".join(
        f'<tr><td class="{f.strength}">{html.escape(provenance.STRENGTH_WORDS.get(f.strength, f.strength))}</td>'
        f"<td>{html.escape(f.source)}</td><td>{html.escape(f.message)}</td></tr>" for f in findings)
    caveat = (f"{provenance.LEVELS_NOTE} Metadata never changes the model's probabilities. A declaration can be "
              "removed by re-saving the file, so its absence says nothing; a camera name or editor is easy to write, so "
              "its presence proves nothing either.")
    return ('<h2>What the file declares</h2><table id="provenance"><tr><th>strength</th><th>source</th>'
            f'<th>finding</th></tr>{rows}</table><p class="muted">{html.escape(caveat)}</p>')
