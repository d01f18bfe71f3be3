"""What a file declares about its own origin, read from its original bytes before any decoding.

    from detector.provenance import check
    for finding in check(data, name="photo.jpg"):
        print(finding.strength, finding.message)

Sources, each read with a size cap and never trusted to be well formed:

- **c2pa**: Content Credentials (a signed C2PA manifest store), read with `c2pa-python` without any network
  access: who signed, the claim generator, the actions, any IPTC `digitalSourceType`, in the active manifest and
  in every earlier manifest its ingredients lead to (each finding says which one), and what the validation codes
  mean: the file changed after signing, a damaged manifest, or only a problem with the signer's credentials (not on
  a trust list, expired, revoked), which is no evidence of change.
- **xmp**: the IPTC `DigitalSourceType` and `xmp:CreatorTool` in the XMP packet.
- **exif**: `Software`, `Make`, `Model`, and Stable Diffusion web UI settings in `UserComment`.
- **png-text**: text chunks generators write (`parameters` from the Stable Diffusion web UI, `prompt` and
  `workflow` from ComfyUI, InvokeAI's and NovelAI's keys).
- **file**: what holds for the file as a whole (nothing found, too large to check).

Strengths (`Strength`, strongest first): the strength of a declared AI origin follows how far it is verified
(`VERIFICATION`): `strong` only in Content Credentials that validate and whose signer is on the trust list
(`TRUST_ANCHORS_ENV` names it); `declared` (declared, not verified) in credentials that validate from a signer
nobody vouches for, and in unsigned text (XMP, EXIF, PNG chunks) that anyone can write or copy; `weak` in
credentials that do not validate (the file or its manifest changed after signing, a manifest copied from another
picture, a damaged manifest) or for an input ingredient only, and for declared synthetic content that need not be
AI. `warning` is a signed manifest that does not validate, or whose certificate was revoked; `info` a neutral fact
(a camera name, an editor, a signature); `error` metadata that could not be read. Metadata never changes the
model's probabilities, and missing metadata is never evidence that a picture is real: most sites strip it
and generators need not write it.
"""
from __future__ import annotations

import functools
import io
import json
import logging
import os
import re
import warnings
import xml.parsers.expat
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from PIL import Image

logger = logging.getLogger(__name__)



class Strength(StrEnum):
    """How much a finding weighs, strongest first. Compared and serialised as its plain string value."""

    STRONG = "strong"  # an AI origin in Content Credentials that validate, from a signer on the trust list
    DECLARED = "declared"  # an AI origin declared, not verified: unsigned text, or credentials from an unknown signer
    WEAK = "weak"  # an AI origin in credentials that do not validate, or of an input only; declared synthetic content
    WARNING = "warning"  # Content Credentials that do not validate, or whose certificate was revoked
    INFO = "info"  # a neutral fact: a camera, an editor, a signature, nothing found
    ERROR = "error"  # metadata that could not be read


STRENGTHS = tuple(Strength)
STRENGTH_WORDS = {  # what each strength is called wherever findings are shown (the page, the report)
    Strength.STRONG: "strong evidence of AI origin",
    Strength.DECLARED: "AI origin declared, not verified",
    Strength.WEAK: "weak evidence",
    Strength.WARNING: "warning",
    Strength.INFO: "information",
    Strength.ERROR: "could not read",
}
# How a declared AI origin is verified → (its strength, what it means). The one rule: strength follows validity.
VERIFICATION = {
    "trusted signer": (Strength.STRONG, "It is in Content Credentials that validate and whose signer is on the trust "
                                        "list: strong evidence the picture is generated, whatever the model's score."),
    "unknown signer": (Strength.DECLARED, "Declared, not verified: the Content Credentials match the file, but nobody "
                                          "vouches for their signer (not on a trust list this checker knows, or its "
                                          "certificate expired or was revoked), so anyone could have made them."),
    "unsigned": (Strength.DECLARED, "Declared, not verified: it is unsigned metadata, which anyone can write into a "
                                    "file or copy from another."),
    "does not validate": (Strength.WEAK, "Weak evidence at most: the Content Credentials that say so do not validate "
                                         "(the file or its manifest changed after signing, or the manifest is damaged; "
                                         "credentials copied from another picture read the same way), so the claim "
                                         "may describe another picture."),
    "input ingredient": (Strength.WEAK, "Weak evidence at most: it is said of an ingredient used as an input, not of "
                                        "the picture itself."),
}
LEVELS_NOTE = ("An AI origin counts as strong evidence only in Content Credentials that validate and whose signer is "
               "on the trust list. Unsigned metadata (IPTC, EXIF, generator settings) and credentials from a signer "
               "nobody vouches for are declared, not verified: anyone can write or copy them. Credentials that no "
               "longer validate are weak evidence at most.")
AI_KINDS = ("ai-declared", "generator")  # the finding kinds that declare an AI origin
VERIFIED_LEVELS = (Strength.STRONG, Strength.DECLARED, Strength.WEAK)  # the strengths a declared AI origin can have
TRUST_ANCHORS_ENV = "DETECTOR_C2PA_TRUST_ANCHORS"  # a PEM file of the C2PA trust anchors whose signers count as strong
MAX_TRUST_ANCHORS_BYTES = 4 * 1024 * 1024
MAX_INPUT_BYTES = 64 * 1024 * 1024  # beyond this nothing is parsed (the app's and the library's limit is 10 MB)
MAX_XMP_BYTES = 1024 * 1024  # one XMP packet; real ones are a few kB (a JPEG segment holds at most 64 kB)
MAX_TEXT = 300  # characters of any metadata value kept in a finding
IPTC_VOCABULARY = "http://cv.iptc.org/newscodes/digitalsourcetype/"
AI_SOURCE_TYPES = {  # IPTC digital source types that declare generative AI
    "trainedAlgorithmicMedia": "generated by a trained AI model",
    "compositeWithTrainedAlgorithmicMedia": "a composite that includes AI-generated content",
}
SYNTHETIC_SOURCE_TYPES = {  # declared non-photographic content that need not be AI
    "algorithmicMedia": "created by an algorithm without training data",
    "compositeSynthetic": "a composite of synthetic elements",
    "digitalArt": "digital art made by a person with software",
    "virtualRecording": "a recording of a virtual scene",
    "dataDrivenMedia": "rendered from data",
}
# Software names that generators write (EXIF Software, XMP CreatorTool, PNG text, C2PA claim generator), one list for
# every source: a regular expression → the name shown. It is matched on the normalised text (lower case, every run of
# separators such as _ - . / [ ] turned into one space), as whole words: "Adobe_Firefly/1.0" and "FLUX.1 [dev]" are
# found, "OpenAir" is not OpenAI. Common words (runway, playground, aurora, flux) count only with what generators write
# beside them.
KNOWN_GENERATORS = (
    (r"adobe firefly", "Adobe Firefly"),
    (r"dall e|dalle", "DALL·E"),
    (r"chatgpt", "ChatGPT (OpenAI)"), (r"gpt 4o", "GPT-4o (OpenAI)"), (r"gpt image", "GPT Image (OpenAI)"),
    (r"openai", "OpenAI"),
    (r"midjourney", "Midjourney"),
    (r"sdxl|sd xl", "Stable Diffusion (SDXL)"),
    (r"stable diffusion|stablediffusion", "Stable Diffusion"),
    (r"automatic1111", "Stable Diffusion web UI"), (r"comfyui", "ComfyUI"), (r"invokeai", "InvokeAI"),
    (r"fooocus", "Fooocus"), (r"novelai", "NovelAI"), (r"leonardo ai|leonardoai", "Leonardo.Ai"),
    (r"ideogram", "Ideogram"),
    (r"black forest labs|flux (?:1|2|pro|dev|schnell|kontext|ultra)", "FLUX"),
    (r"gemini", "Google Gemini"),
    # "imagen" is also Spanish for "image" and starts Imagenomic's name: only "Google Imagen" or "Imagen" + version
    (r"google imagen|imagen ?[1-9](?! [0-9])", "Google Imagen"),
    (r"(?:x ?ai|grok) aurora", "Aurora (xAI)"), (r"grok", "Grok (xAI)"),
    (r"recraft", "Recraft"), (r"krea(?: ai)?", "Krea"),
    (r"runwayml|runway (?:ml|ai|gen ?[1-9]?|frames|aleph)", "Runway"),
    (r"playground(?:ai| ai| v ?[1-9])", "Playground"),
    (r"bing image creator", "Bing Image Creator"),
)
# Software that must never be taken for a generator, whatever it contains: retouching tools and editors whose names
# hold a generator's word, and client libraries that call a generator's API without being one (normalised like the
# text; removed from it before KNOWN_GENERATORS is matched).
NOT_GENERATORS = (
    "imagenomic",  # Imagenomic Portraiture, Noiseware, Realgrain: skin retouching and noise plug-ins
    "editor de imagen", "editor de imágenes", "editor de imagenes", "visor de imagen", "visor de imágenes",
    "procesador de imagen", "captura de imagen", "gestor de imagen",  # Spanish editors and viewers ("imagen" = image)
    "openai python", "openai node", "openai java", "openai go", "openai dotnet", "openai ruby",  # OpenAI's API clients
)
# PNG text keys that generators write → the tool
GENERATOR_TEXT_KEYS = {
    "parameters": "Stable Diffusion web UI (AUTOMATIC1111 or Forge)",
    "prompt": "ComfyUI",
    "workflow": "ComfyUI",
    "sd-metadata": "InvokeAI",
    "invokeai_metadata": "InvokeAI",
    "dream": "InvokeAI",
}
NO_METADATA = ("No provenance metadata found. That is not evidence that the picture is real: most sites and apps "
               "remove metadata, and generators need not write it.")
NO_READABLE_METADATA = ("No other provenance metadata could be read. That is not evidence that the picture is real: "
                        "most sites and apps remove metadata, and generators need not write it.")
SIGNATURES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png", b"GIF8": "image/gif"}


@dataclass(frozen=True)
class Finding:
    """One thing the file declares: `source` (c2pa, xmp, exif, png-text, file), `kind` (what it is, e.g.
    ai-declared, generator, signed, tampered, camera, software, unreadable, none), `strength` (see STRENGTHS),
    a plain-language `message`, and `details` (JSON-friendly)."""

    source: str
    kind: str
    strength: str
    message: str
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "strength", Strength(self.strength))  # a strength outside Strength is a bug here
        if not self.message.endswith((".", "!", "?")):
            object.__setattr__(self, "message", self.message + ".")

    def to_dict(self) -> dict:
        return {**asdict(self), "strength": str(self.strength)}


def check(data: bytes, name: str | None = None, trust_anchors: str | None = None) -> list[Finding]:
    """Every finding in `data` (a file's original bytes), strongest first; never raises for bad metadata.

    `trust_anchors`: the PEM certificates whose C2PA signers are trusted (by default the file `TRUST_ANCHORS_ENV`
    names; with none, no signer is on a trust list and no AI origin is strong). With nothing found, one `file`
    finding says so (and that this is no evidence of a real photo)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return [Finding("file", "unreadable", Strength.ERROR, "Could not read the metadata: the input is not a file's bytes.")]
    data = bytes(data)
    if len(data) > MAX_INPUT_BYTES:
        return [Finding("file", "unreadable", Strength.ERROR,
                        f"Could not read the metadata: the file is larger than {MAX_INPUT_BYTES // 1024 // 1024} MB.")]
    findings: list[Finding] = []
    for source, reader in (("c2pa", lambda data: _c2pa(data, trust_anchors)), ("xmp", _xmp), ("exif", _pillow)):
        try:
            findings += reader(data)
        except Exception as err:  # a reader's own bug or a library's surprise: one finding, never a crash
            logger.warning("provenance: the %s reader failed (%s)", source, type(err).__name__)
            findings.append(_unreadable(source, err))
    if not [f for f in findings if f.strength != Strength.ERROR]:
        findings.append(Finding("file", "none", Strength.INFO, NO_METADATA if not findings else NO_READABLE_METADATA))
    return sorted(_dedupe(findings), key=lambda f: _rank(f.strength))


def _rank(strength) -> int:
    return STRENGTHS.index(strength) if strength in STRENGTHS else len(STRENGTHS)


def ai_level(findings: list[Finding]) -> Strength | None:
    """How strongly the file declares an AI origin: STRONG, DECLARED or WEAK (its strongest such finding); None when
    it declares none."""
    levels = [f.strength for f in findings if f.kind in AI_KINDS and f.strength in VERIFIED_LEVELS]
    return Strength(min(levels, key=_rank)) if levels else None


def declares_ai(findings: list[Finding]) -> bool:
    """True when a finding is strong evidence of AI origin (valid Content Credentials from a trusted signer)."""
    return ai_level(findings) == Strength.STRONG


def fields(findings: list[Finding] | None) -> dict:
    """What a JSON row (the command line's, the API's) says about the file's declarations, as the page and the report
    say it: `provenance` (every finding), `provenance_level` (`ai_level`: "strong", "declared", "weak" or None) and
    `provenance_summary` (`summary`); all None when the file was not checked."""
    if findings is None:
        return {"provenance": None, "provenance_level": None, "provenance_summary": None}
    level = ai_level(findings)
    return {"provenance": [f.to_dict() for f in findings], "provenance_level": str(level) if level else None,
            "provenance_summary": summary(findings)}


def summary(findings: list[Finding]) -> str:
    """What the metadata says, beside (never instead of) the model's verdict; "strong evidence" only at STRONG."""
    level = ai_level(findings)
    if level is not None:
        first = next(f for f in findings if f.kind in AI_KINDS and f.strength == level)
        key = first.details.get("verification")
        if key not in VERIFICATION or VERIFICATION[key][0] != level:  # never words stronger than the level
            key = next(k for k, (strength, _) in VERIFICATION.items() if strength == level)
        return (f"The file declares an AI origin ({first.message.rstrip('.')}). {VERIFICATION[key][1]} The model's "
                "probabilities are not changed by it.")
    if any(f.strength == Strength.WEAK for f in findings):
        return ("The file declares synthetic or composite content, without saying AI made it. Missing or partial "
                "metadata is not evidence that the picture is real.")
    return ("The file declares no AI origin. That is not evidence that it is real: most sites and apps remove "
            "metadata, and generators need not write it. The verdict rests on the model alone.")


# --- helpers --------------------------------------------------------------------------------------


def _text(value) -> str:
    """Any metadata value as a short, printable string (values can be bytes, numbers, tuples, anything)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = str(value)
    value = "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in value[: MAX_TEXT * 4]).strip()
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"


def _unreadable(source: str, err: Exception | str) -> Finding:
    what = {"c2pa": "the Content Credentials (C2PA manifest)", "xmp": "the XMP metadata", "exif": "the EXIF metadata",
            "png-text": "the PNG text chunks"}.get(source, "the metadata")
    reason = err if isinstance(err, str) else (_text(err) or type(err).__name__)
    return Finding(source, "unreadable", Strength.ERROR, f"Could not read {what}: {_text(reason)}.", {"reason": _text(reason)})


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen, kept = set(), []
    for f in findings:
        key = (f.source, f.kind, f.message)
        if key not in seen:
            seen.add(key)
            kept.append(f)
    return kept


def _words(value) -> str:
    """Lower case, every run of characters other than letters and digits one space, padded with a space each side."""
    return " " + " ".join(re.split(r"[\W_]+", _text(value).lower())).strip() + " "


_NOT_GENERATORS = re.compile("|".join(re.escape(_words(phrase)[:-1]) + r"(?=\s)" for phrase in NOT_GENERATORS))
_GENERATORS = [(re.compile(rf"(?<= )(?:{pattern})(?= )"), shown) for pattern, shown in KNOWN_GENERATORS]


def known_generator(value) -> str | None:
    """The generator a Software-like string names, if it is on KNOWN_GENERATORS (whole words, separators normalised)."""
    words = _words(value)
    words = _NOT_GENERATORS.sub(" ", words)
    return next((shown for pattern, shown in _GENERATORS if pattern.search(words)), None)


def _ai_finding(source: str, kind: str, message: str, details: dict, verification: str = "unsigned") -> Finding:
    """A declared AI origin, as strong as its `verification` (a key of VERIFICATION) allows; the key is kept in the
    details, where the summary reads what it means."""
    return Finding(source, kind, VERIFICATION[verification][0], message, {**details, "verification": verification})


def _source_type(uri: str, source: str, where: str, verification: str = "unsigned") -> Finding | None:
    """A finding for an IPTC digital source type (a full vocabulary URI or a bare code)."""
    code = _text(uri).rsplit("/", 1)[-1]
    details = {"digital_source_type": code, "where": where}
    if code in AI_SOURCE_TYPES:
        return _ai_finding(source, "ai-declared",
                           f"{where} declares the picture {AI_SOURCE_TYPES[code]} (digital source type {code})",
                           details, verification)
    if code in SYNTHETIC_SOURCE_TYPES:
        return Finding(source, "synthetic-declared", Strength.WEAK,
                       f"{where} declares the picture {SYNTHETIC_SOURCE_TYPES[code]} (digital source type {code})", details)
    if code:
        return Finding(source, "source-type", Strength.INFO,
                       f"{where} declares the digital source type {code}. A declaration, not proof: anyone can write it",
                       details)
    return None


def _mime(data: bytes) -> str | None:
    for magic, mime in SIGNATURES.items():
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return "image/avif" if brand in (b"avif", b"avis") else "image/heic"
    return None


# --- C2PA -----------------------------------------------------------------------------------------

_C2PA_SETTINGS = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}  # never reach the network


@functools.lru_cache(maxsize=4)
def _c2pa_context(anchors: str | None):
    """A c2pa context that never reaches the network and trusts the signers `anchors` (PEM certificates) vouch for:
    these replace the library's own, so with None no signer is trusted unless the library itself vouches for it."""
    import c2pa

    settings = {**_C2PA_SETTINGS, **({"trust": {"trust_anchors": anchors}} if anchors else {})}
    return c2pa.Context.from_dict(settings)


def _trust_anchors(given: str | None) -> tuple[str | None, str | None]:
    """(the trust anchors: `given`, or the text of the PEM file TRUST_ANCHORS_ENV names, or None; why that file
    cannot be used, or None)."""
    if given is not None:
        return given, None
    path = os.environ.get(TRUST_ANCHORS_ENV, "").strip()
    if not path:
        return None, None
    try:
        with open(path, "rb") as file:
            text = file.read(MAX_TRUST_ANCHORS_BYTES + 1).decode("ascii")
    except (OSError, UnicodeError) as err:
        return None, _text(getattr(err, "strerror", None) or err)
    if len(text) > MAX_TRUST_ANCHORS_BYTES:
        return None, f"it is larger than {MAX_TRUST_ANCHORS_BYTES // 1024 // 1024} MB"
    if "-----BEGIN CERTIFICATE-----" not in text:
        return None, "it holds no PEM certificate"
    return text, None


def _trust_problem(given: str | None, why: str) -> Finding:
    what = ("the trust anchors given" if given is not None
            else f"the C2PA trust list {_text(os.environ.get(TRUST_ANCHORS_ENV, ''))} that {TRUST_ANCHORS_ENV} names")
    logger.warning("provenance: could not use %s (%s)", what, why)
    return Finding("c2pa", "unreadable", Strength.ERROR,
                   f"Could not use {what} ({why}): point {TRUST_ANCHORS_ENV} at a PEM file of trust anchor "
                   "certificates, or unset it. Until then no signer is on a trust list, and no AI origin counts as strong",
                   {"reason": why})


def _c2pa(data: bytes, trust_anchors: str | None = None) -> list[Finding]:
    if b"c2pa" not in data and b"jumb" not in data:  # no JUMBF box, no manifest: skip the native library
        return []
    try:
        import c2pa
    except ImportError:
        return [_unreadable("c2pa", "c2pa-python is not installed")]
    anchors, problem = _trust_anchors(trust_anchors)
    try:
        context = _c2pa_context(anchors)
    except Exception as err:  # certificates the library refuses
        problem, context = _text(err) or type(err).__name__, _c2pa_context(None)
    try:
        reader = c2pa.Reader.try_create(_mime(data), io.BytesIO(data), None, context)
        if reader is None:
            return []
        with reader:
            store = json.loads(reader.json())
    except Exception as err:
        logger.info("provenance: C2PA manifest unreadable (%s)", type(err).__name__)
        return [_unreadable("c2pa", err)]
    return ([_trust_problem(trust_anchors, problem)] if problem else []) + _c2pa_findings(store)


# What a failing validation code means for a reader (codes of the C2PA specification, as c2pa-rs reports them):
# "changed": a hash or signature no longer matches, so the file or its manifest changed after signing; "credential":
# a problem with who signed or when (not vouched for, expired, revoked, an unverifiable time-stamp), not with the
# file; anything else: the manifest is damaged or incomplete.
CREDENTIAL_CODES = {
    "signingCredential.untrusted": "the signer is not on a trust list this checker knows",
    "signingCredential.expired": "the signing certificate has expired, and no trusted time-stamp shows that it was "
                                 "valid when the file was signed",
    "signingCredential.revoked": "the signing certificate was revoked",
    "signingCredential.invalid": "the signing certificate is not valid for signing",
    "claimSignature.outsideValidity": "it was signed outside the signing certificate's validity",
}
REVOKED_CODES = ("signingCredential.revoked", "signingCredential.invalid")  # the signature then vouches for nothing
MAX_CHAIN = 16  # manifests followed through ingredients (a store can hold a long edit history, or a loop)
RELATIONSHIPS = {"parentOf": "its parent ingredient", "componentOf": "an ingredient composited into it",
                 "inputTo": "an ingredient used as an input"}


def _code_kind(code: str) -> str:
    if code in CREDENTIAL_CODES or code.startswith(("signingCredential.", "timeStamp.")):
        return "credential"
    if code.endswith(".mismatch"):
        return "changed"
    return "damaged"


def _failures(statuses) -> list[dict]:
    """Failing validation statuses, from `validation_results` ({"activeManifest": {"failure": [...]}}, c2pa 2.x) or
    the older `validation_status` list (which also lists failures only)."""
    if isinstance(statuses, dict):
        active = statuses.get("activeManifest") if isinstance(statuses.get("activeManifest"), dict) else {}
        statuses = active.get("failure")
    return [s for s in statuses or [] if isinstance(s, dict) and s.get("code")]


def _trusted(statuses) -> bool:
    """Whether `validation_results` say the signing certificate chains to a trust anchor (signingCredential.trusted)."""
    active = statuses.get("activeManifest") if isinstance(statuses, dict) else None
    success = active.get("success") if isinstance(active, dict) else None
    return any(isinstance(s, dict) and s.get("code") == "signingCredential.trusted" for s in success or [])


def _verification(validity: str, trusted: bool) -> str:
    """The VERIFICATION key of an AI origin declared in one manifest: "trusted signer" only when its credentials
    validate and the signer is on the trust list."""
    if validity in ("changed", "damaged"):
        return "does not validate"
    return "trusted signer" if validity == "valid" and trusted else "unknown signer"


def _weakest(*verifications: str) -> str:
    return max(verifications, key=lambda v: _rank(VERIFICATION[v][0]))


def _validity(failures: list[dict]) -> tuple[str, str]:
    """(what the failures mean: "valid", "credential", "revoked", "changed" or "damaged"; the reasons, in words)."""
    kinds = {_code_kind(_text(s["code"])) for s in failures}
    codes = [_text(s["code"]) for s in failures]
    reasons = "; ".join(CREDENTIAL_CODES.get(code) or _text(s.get("explanation") or code)
                        for code, s in zip(codes, failures))
    if "changed" in kinds:
        return "changed", reasons
    if "damaged" in kinds:
        return "damaged", reasons
    if any(code in REVOKED_CODES for code in codes):
        return "revoked", reasons
    return ("credential", reasons) if failures else ("valid", "")


def _manifest_facts(manifest: dict) -> tuple[str, str, list[str], list[dict]]:
    """(signer, issuer, claim generators, actions) of one manifest."""
    signature = manifest.get("signature_info") if isinstance(manifest.get("signature_info"), dict) else {}
    signer = _text(signature.get("common_name") or "") or "an unnamed signer"
    issuer = _text(signature.get("issuer") or "")
    generators = [_text(g.get("name", "")) + (f" {_text(g['version'])}" if g.get("version") else "")
                  for g in manifest.get("claim_generator_info") or [] if isinstance(g, dict)]
    if not generators and manifest.get("claim_generator"):
        generators = [_text(manifest["claim_generator"])]
    actions = []
    for assertion in manifest.get("assertions") or []:
        if isinstance(assertion, dict) and str(assertion.get("label", "")).startswith("c2pa.actions"):
            data = assertion.get("data") if isinstance(assertion.get("data"), dict) else {}
            actions += [a for a in data.get("actions") or [] if isinstance(a, dict)]
    return signer, issuer, generators, actions


def _ingredient_chain(store: dict, manifests: dict) -> list[tuple[str, dict, str, list[dict]]]:
    """The manifests the active one reaches through its ingredients, depth first: (how it is reached, in words;
    the manifest; its relationship; the ingredient's validation results). Each manifest once; at most MAX_CHAIN."""
    chain, seen = [], {store.get("active_manifest")}

    def walk(manifest: dict, path: str) -> None:
        for ingredient in manifest.get("ingredients") or []:
            if not isinstance(ingredient, dict) or len(chain) >= MAX_CHAIN:
                continue
            label = ingredient.get("active_manifest")
            if not isinstance(label, str) or label in seen or not isinstance(manifests.get(label), dict):
                continue
            seen.add(label)
            relationship = _text(ingredient.get("relationship") or "parentOf")
            title = _text(ingredient.get("title") or "")
            where = RELATIONSHIPS.get(relationship, f"an ingredient ({relationship})") + (f" {title!r}" if title else "")
            where = where if not path else f"{where} of {path}"
            results = ingredient.get("validation_results") or ingredient.get("validation_status")
            chain.append((where, manifests[label], relationship, results))
            walk(manifests[label], where)

    walk(manifests[store["active_manifest"]], "")
    return chain


def _declarations(manifest: dict, where: str, qualifier: str, verification: str) -> list[Finding]:
    """What one manifest declares about AI: digital source types in its actions, a known generator as its claim
    generator, as strong as `verification` allows. `where` names the manifest in the message."""
    _, _, generators, actions = _manifest_facts(manifest)
    findings = []
    for action in actions:
        if action.get("digitalSourceType"):
            found = _source_type(str(action["digitalSourceType"]), "c2pa",
                                 f"{where}: the action {_text(action.get('action', 'unnamed'))}{qualifier}", verification)
            if found:
                findings.append(found)
    for generator in generators:
        if known_generator(generator):
            findings.append(_ai_finding("c2pa", "generator",
                                        f"{where} name the AI generator {known_generator(generator)} as the claim "
                                        f"generator ({generator}){qualifier}",
                                        {"claim_generator": generator, "where": where}, verification))
    return findings


def _c2pa_findings(store: dict) -> list[Finding]:
    if not isinstance(store, dict):
        return [_unreadable("c2pa", "the manifest store is not an object")]
    manifests = store.get("manifests") if isinstance(store.get("manifests"), dict) else {}
    active = manifests.get(store.get("active_manifest")) if isinstance(store.get("active_manifest"), str) else None
    if not isinstance(active, dict):
        return [_unreadable("c2pa", "no active manifest")]
    signer, issuer, generators, actions = _manifest_facts(active)
    statuses = [s for s in store.get("validation_status") or [] if isinstance(s, dict)]
    codes = [_text(s.get("code", "")) for s in statuses]
    state = _text(store.get("validation_state") or "")
    failures = _failures(store.get("validation_results")) or [s for s in statuses if s.get("code")]
    validity, reasons = _validity(failures)
    trusted = _trusted(store.get("validation_results"))
    if validity == "valid" and not trusted:  # no failure, yet no trust list vouched for the signer
        validity, reasons = "credential", "the signer is not on a trust list this checker knows"
    verification = _verification(validity, trusted)
    chain = _ingredient_chain(store, manifests)
    signature = active.get("signature_info") if isinstance(active.get("signature_info"), dict) else {}
    details = {"signer": signer, "issuer": issuer, "claim_generator": generators, "validation_state": state,
               "validation_codes": codes, "actions": [_text(a.get("action", "")) for a in actions],
               "signed_at": _text(signature.get("time") or ""), "ingredient_manifests": len(chain)}
    by = f"signed by {signer}" + (f" (issuer {issuer})" if issuer and issuer != signer else "")
    made = f", made with {', '.join(generators)}" if generators else ""
    findings = []
    qualifier = ""
    if validity in ("changed", "damaged"):
        what = ("the file or its manifest was changed after signing" if validity == "changed"
                else "the manifest is damaged or incomplete")
        findings.append(Finding("c2pa", "tampered" if validity == "changed" else "damaged", Strength.WARNING,
                                f"Content Credentials {by}{made}, but they do not validate: {what} ({reasons}). What "
                                "they declare may no longer describe this picture", details))
        qualifier = " (in credentials that do not validate)"
    elif validity == "revoked":
        findings.append(Finding("c2pa", "credential", Strength.WARNING,
                                f"Content Credentials {by}{made}. The file has not changed since it was signed, but "
                                f"{reasons}: the signature vouches for nothing", details))
    elif validity == "credential":
        findings.append(Finding("c2pa", "signed", Strength.INFO,
                                f"Content Credentials {by}{made}. The signature matches the file (nothing changed since "
                                f"signing), but {reasons}: who signed is not vouched for", details))
    else:
        findings.append(Finding("c2pa", "signed", Strength.INFO,
                                f"Content Credentials {by}{made}; the signature is valid and the signer is on the trust "
                                f"list ({state or 'no state given'})", details))
    findings += _declarations(active, "The Content Credentials", qualifier, verification)
    if chain:
        listed = "; ".join(f"{where} ({'signed by ' + _manifest_facts(manifest)[0]}"
                           + (f", made with {', '.join(_manifest_facts(manifest)[2])}" if _manifest_facts(manifest)[2] else "")
                           + ")" for where, manifest, _, _ in chain)
        findings.append(Finding("c2pa", "ingredients", Strength.INFO,
                                f"The Content Credentials hold {len(chain)} earlier manifest(s), of what the picture was "
                                f"made from: {listed}", {"ingredients": [where for where, *_ in chain]}))
    for where, manifest, relationship, results in chain:
        ingredient_validity, _ = _validity(_failures(results))
        inner = qualifier or (" (in the ingredient's credentials, which do not validate)"
                              if ingredient_validity in ("changed", "damaged") else "")
        # as strong as the weakest of: the active credentials, the ingredient's own as recorded, an input only
        own = _verification(ingredient_validity, _trusted(results))
        findings += _declarations(manifest, f"The Content Credentials of {where}", inner,
                                  _weakest(verification, own, *(["input ingredient"] if relationship == "inputTo" else [])))
    return findings


# --- XMP ------------------------------------------------------------------------------------------

_XMP_START = re.compile(rb"<x:xmpmeta\b|<\?xpacket begin")
_XMP_END = re.compile(rb"</x:xmpmeta\s*>|<\?xpacket end[^>]*\?>")


def _xmp(data: bytes) -> list[Finding]:
    start = _XMP_START.search(data)
    if not start:
        return []
    end = _XMP_END.search(data, start.start(), start.start() + MAX_XMP_BYTES + 64)
    if not end:
        if _XMP_END.search(data, start.start()):
            return [_unreadable("xmp", f"the XMP packet is larger than {MAX_XMP_BYTES // 1024} kB")]
        return [_unreadable("xmp", "the XMP packet is truncated (it has no end)")]
    packet = data[start.start():end.end()]
    if packet.startswith(b"<x:xmpmeta") and not packet.rstrip().endswith(b">"):
        packet += b">"
    return _xmp_findings(packet)


class _XmpParser:
    """Expat with namespaces, no DTD, no entities (defusedxml's rules): collects DigitalSourceType and CreatorTool."""

    WANTED = ("DigitalSourceType", "CreatorTool")

    def __init__(self):
        self.values: dict[str, list[str]] = {key: [] for key in self.WANTED}
        self.stack: list[tuple[str, list[str]]] = []
        parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
        parser.StartDoctypeDeclHandler = self._refuse("a DTD")
        parser.EntityDeclHandler = self._refuse("an entity declaration")
        parser.ExternalEntityRefHandler = self._refuse("an external entity")
        parser.StartElementHandler, parser.EndElementHandler = self._start, self._end
        parser.CharacterDataHandler = self._text
        self.parser = parser

    @staticmethod
    def _refuse(what):
        def handler(*args):
            raise ValueError(f"the XMP packet holds {what}, which is refused")
        return handler

    def _start(self, name, attributes):
        local = name.rsplit(" ", 1)[-1]
        for key, value in attributes.items():
            attr = key.rsplit(" ", 1)[-1]
            if attr in self.WANTED:
                self.values[attr].append(value)
            elif attr == "resource" and local in self.WANTED:
                self.values[local].append(value)
        self.stack.append((local, []))

    def _text(self, text):
        if self.stack:
            self.stack[-1][1].append(text)

    def _end(self, name):
        local, parts = self.stack.pop()
        text = "".join(parts).strip()
        if not text:
            return
        if local in self.WANTED:
            self.values[local].append(text)
        elif local == "li":  # a value inside rdf:Alt / rdf:Seq / rdf:Bag
            owner = next((n for n, _ in reversed(self.stack[-2:]) if n in self.WANTED), None)
            if owner:
                self.values[owner].append(text)

    def parse(self, packet: bytes) -> dict[str, list[str]]:
        self.parser.Parse(packet, True)
        return self.values


def _xmp_findings(packet: bytes) -> list[Finding]:
    try:
        values = _XmpParser().parse(packet)
    except (xml.parsers.expat.ExpatError, ValueError, UnicodeError) as err:
        return [_unreadable("xmp", f"the XMP packet is not well-formed XML ({_text(err)})")]
    findings = []
    for value in dict.fromkeys(values["DigitalSourceType"]):
        found = _source_type(value, "xmp", "The XMP metadata (IPTC DigitalSourceType)")
        if found:
            findings.append(found)
    for tool in dict.fromkeys(values["CreatorTool"]):
        findings.append(_software("xmp", "XMP CreatorTool", tool))
    return findings


# --- EXIF and PNG text (through Pillow, which reads headers without decoding pixels) ----------------------

EXIF_SOFTWARE, EXIF_MAKE, EXIF_MODEL, EXIF_IFD, EXIF_USER_COMMENT = 0x0131, 0x010F, 0x0110, 0x8769, 0x9286


def _software(source: str, where: str, value) -> Finding:
    value = _text(value)
    generator = known_generator(value)
    if generator:
        return _ai_finding(source, "generator", f"The {where} names the AI generator {generator} (\"{value}\")",
                           {"software": value})
    return Finding(source, "software", Strength.INFO,
                   f"The {where} names the software \"{value}\": saved or edited with it, which says nothing about "
                   "AI either way", {"software": value})


def _pillow(data: bytes) -> list[Finding]:
    try:
        with warnings.catch_warnings():  # only the header and metadata are read here, never the pixels; the
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # analysis refuses a bomb itself
            image = Image.open(io.BytesIO(data))
    except Exception as err:  # not an image Pillow reads: the analysis says why
        if data.startswith(b"\x89PNG") and "text" in str(err).lower():  # Pillow refuses oversized text chunks
            return [_unreadable("png-text", err)]
        return []
    with image:
        findings = _exif(image)
        if image.format == "PNG":
            findings += _png_text(image)
    return findings


def _exif(image: Image.Image) -> list[Finding]:
    try:
        exif = image.getexif()
        software, make, model = exif.get(EXIF_SOFTWARE), exif.get(EXIF_MAKE), exif.get(EXIF_MODEL)
        comment = exif.get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT) if EXIF_IFD in exif else None
    except Exception as err:
        return [_unreadable("exif", err)]
    findings = []
    if software not in (None, "", b""):
        findings.append(_software("exif", "EXIF Software tag", software))
    camera = " ".join(_text(v) for v in (make, model) if v not in (None, "", b""))
    if camera:
        findings.append(Finding("exif", "camera", Strength.INFO,
                                f"The EXIF names a camera ({camera}). Camera tags are easy to copy or write: they are "
                                "not evidence that the picture is real", {"make": _text(make or ""), "model": _text(model or "")}))
    if comment is not None:
        text = _user_comment(comment)
        if "Steps:" in text and "Sampler:" in text:
            findings.append(_ai_finding("exif", "generator",
                                    "The EXIF UserComment holds Stable Diffusion web UI generation settings (prompt, "
                                    "steps, sampler): the picture was saved by an image generator",
                                    {"excerpt": _text(text)}))
    return findings


def _user_comment(value) -> str:
    if isinstance(value, bytes):
        head, body = value[:8], value[8:]
        if head.startswith(b"UNICODE"):
            for encoding in ("utf-16-be", "utf-16-le"):
                text = body.decode(encoding, "replace")
                if "Steps" in text:
                    return text
            return body.decode("utf-16-be", "replace")
        return body.decode("utf-8", "replace") if head.rstrip(b"\0") in (b"ASCII", b"") else value.decode("utf-8", "replace")
    return _text(value)


def _png_text(image: Image.Image) -> list[Finding]:
    # The chunks before the pixels, as Pillow read them when it opened the file (generators write them there);
    # `image.text` would decode the pixels to reach any after them.
    chunks = {key: value for key, value in image.info.items() if isinstance(key, str) and isinstance(value, (str, bytes))}
    findings = []
    for key, value in chunks.items():
        tool = GENERATOR_TEXT_KEYS.get(str(key).lower())
        if tool:
            findings.append(_ai_finding("png-text", "generator",
                                    f"The PNG holds a \"{_text(key)}\" text chunk, the generation settings {tool} "
                                    "writes when it makes a picture", {"key": _text(key), "tool": tool,
                                                                       "excerpt": _text(value)}))
        elif str(key).lower() in ("software", "source", "creator tool", "generator") and _text(value):
            findings.append(_software("png-text", f"PNG text \"{_text(key)}\"", value))
        elif str(key) == "XML:com.adobe.xmp":  # a compressed XMP packet the raw search could not see
            findings += _xmp_findings(_text_bytes(value))
    return findings


def _text_bytes(value) -> bytes:
    raw = value.encode("utf-8", "replace") if isinstance(value, str) else bytes(value)
    return raw[:MAX_XMP_BYTES]
