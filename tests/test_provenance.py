"""Provenance on real files made here: a C2PA-signed JPEG (a certificate chain made in the test), XMP, EXIF, PNG text,
and broken or hostile metadata, which must give "could not read" findings and never an exception."""
from __future__ import annotations

import datetime
import io
import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from detector import provenance
from detector.provenance import IPTC_VOCABULARY, check, summary
from detector.spectrum import spectrum


def picture(seed: int = 0, size=(96, 96)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def jpeg(image: Image.Image | None = None, **save) -> bytes:
    buffer = io.BytesIO()
    (image or picture()).save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def png(image: Image.Image | None = None, **save) -> bytes:
    buffer = io.BytesIO()
    (image or picture()).save(buffer, "PNG", **save)
    return buffer.getvalue()


def xmp_packet(source_type: str = "trainedAlgorithmicMedia", tool: str = "Some Editor 2.0") -> bytes:
    return f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
 xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="{tool}">
<Iptc4xmpExt:DigitalSourceType>{IPTC_VOCABULARY}{source_type}</Iptc4xmpExt:DigitalSourceType>
</rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>""".encode()


def with_app1_xmp(data: bytes, packet: bytes) -> bytes:
    """A JPEG with an XMP APP1 segment right after SOI (as cameras and editors write it)."""
    body = b"http://ns.adobe.com/xap/1.0/\0" + packet
    assert len(body) < 65534
    return data[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + data[2:]


def kinds(findings):
    return {(f.source, f.kind, f.strength) for f in findings}


# --- C2PA ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def credentials():
    """(a signer, its test CA as PEM): the CA is on no trust list unless a test passes it as `trust_anchors`."""
    return make_credentials()


@pytest.fixture(scope="module")
def signer(credentials):
    return credentials[0]


def make_signer(valid_for: datetime.timedelta = datetime.timedelta(days=30)):
    """An ES256 signer with a two-certificate chain (test CA → end entity), made here with `cryptography`; the
    certificates expire `valid_for` from now."""
    return make_credentials(valid_for)[0]


def make_credentials(valid_for: datetime.timedelta = datetime.timedelta(days=30)):
    """(an ES256 signer as `make_signer` makes it, its test CA's certificate as PEM text): the CA is what a trust
    list would hold."""
    import c2pa
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Provenance Test Org")])

    def usage(ca: bool):
        return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                             encipher_only=False, decipher_only=False)

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def certificate(subject, issuer, public, signing_key, ca):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + valid_for)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
                   .add_extension(usage(ca), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))
        if not ca:
            builder = (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                       .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
        return builder.sign(signing_key, hashes.SHA256())

    ca = certificate(name("Provenance Test CA"), name("Provenance Test CA"), ca_key.public_key(), ca_key, True)
    leaf = certificate(name("Provenance Test Signer"), ca.subject, key.public_key(), ca_key, False)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, private, None))
    return signer, ca.public_bytes(serialization.Encoding.PEM).decode()


def sign(signer, data: bytes, source_type: str | None = "trainedAlgorithmicMedia", generator="Provenance Test Tool") -> bytes:
    import c2pa

    action = {"action": "c2pa.created", "softwareAgent": {"name": generator}}
    if source_type:
        action["digitalSourceType"] = IPTC_VOCABULARY + source_type
    manifest = {"claim_generator_info": [{"name": generator, "version": "1.0"}], "title": "made.jpg",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}]}
    output = io.BytesIO()
    with c2pa.Builder(json.dumps(manifest)) as builder:
        builder.sign(signer, "image/jpeg", io.BytesIO(data), output)
    return output.getvalue()


@pytest.fixture(scope="module")
def signed(signer) -> bytes:
    return sign(signer, jpeg(picture(1, (128, 96))))


def flipped(data: bytes) -> bytes:
    changed = bytearray(data)
    changed[-300] ^= 0xFF  # inside the entropy-coded image data, after the manifest
    return bytes(changed)


def transplant(signed: bytes, photo: bytes) -> bytes:
    """`photo` (a JPEG) carrying the manifest store of `signed`: its APP11 segments copied in right after SOI, as a
    forger copies Content Credentials from a generated picture onto a real one."""
    segments, at = [], 2
    while signed[at] == 0xFF and signed[at + 1] != 0xDA:  # the segments before the scan
        length = int.from_bytes(signed[at + 2 : at + 4], "big")
        if signed[at + 1] == 0xEB:
            segments.append(signed[at : at + 2 + length])
        at += 2 + length
    assert segments
    return photo[:2] + b"".join(segments) + photo[2:]


def ai_strengths(findings) -> set[str]:
    return {f.strength for f in findings if f.kind in ("ai-declared", "generator")}


def test_c2pa_ai_origin_from_an_unknown_signer_is_declared_not_verified(signed):
    """Valid credentials whose signer is on no trust list (a test CA here, or anyone's self-made certificate): the
    file is unchanged since signing, but anyone could have signed it, so the AI origin is declared, not strong."""
    findings = check(signed, "made.jpg")
    assert ("c2pa", "ai-declared", "declared") in kinds(findings)
    assert findings[0].strength == "declared"  # strongest first
    assert "trainedAlgorithmicMedia" in findings[0].message
    (signature,) = [f for f in findings if f.kind == "signed"]
    assert "Provenance Test Signer" in signature.message and "Provenance Test Tool" in signature.message
    assert "not on a trust list" in signature.message  # a test CA: signed, valid, but nobody vouches for it
    assert signature.details["validation_state"] == "Valid"
    assert signature.details["actions"] == ["c2pa.created"]
    assert not provenance.declares_ai(findings) and provenance.ai_level(findings) == "declared"
    assert "declares an AI origin" in summary(findings) and "not verified" in summary(findings)
    assert "strong evidence" not in summary(findings).lower()
    json.dumps([f.to_dict() for f in findings])


def test_valid_credentials_from_a_trusted_signer_are_strong_evidence(credentials, signed, tmp_path, monkeypatch):
    signer, ca = credentials
    findings = check(signed, "made.jpg", trust_anchors=ca)
    assert (findings[0].kind, findings[0].strength) == ("ai-declared", "strong")
    (signature,) = [f for f in findings if f.kind == "signed"]
    assert signature.details["validation_state"] == "Trusted" and "on the trust list" in signature.message
    assert provenance.declares_ai(findings) and "strong evidence the picture is generated" in summary(findings)
    # the trust list named by the environment, as the page and the command line read it
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(ca)
    monkeypatch.setenv(provenance.TRUST_ANCHORS_ENV, str(anchors))
    assert provenance.ai_level(check(signed)) == "strong"
    # a trust list that cannot be read: said, with the remedy, and the credentials read as from an unknown signer
    monkeypatch.setenv(provenance.TRUST_ANCHORS_ENV, str(tmp_path / "missing.pem"))
    findings = check(signed)
    (problem,) = [f for f in findings if f.strength == "error"]
    assert provenance.TRUST_ANCHORS_ENV in problem.message and "PEM" in problem.message
    assert provenance.ai_level(findings) == "declared"


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("how", ["flipped byte", "copied onto a camera photo"])
def test_credentials_that_do_not_validate_are_never_strong_evidence(credentials, signed, how, trusted):
    """A hash that no longer matches (assertion.dataHash.mismatch): the picture changed after signing, or the
    manifest of a generated picture was copied onto a real photo. What it declares may describe another picture, so
    it is weak evidence at most, whoever signed it, and the summary never says "strong evidence"."""
    if how == "flipped byte":
        data = flipped(signed)
    else:
        exif = Image.Exif()
        exif[provenance.EXIF_MAKE], exif[provenance.EXIF_MODEL] = "Canon", "EOS R5"
        data = transplant(signed, jpeg(picture(7, (128, 96)), exif=exif))
    findings = check(data, **({"trust_anchors": credentials[1]} if trusted else {}))
    (tampered,) = [f for f in findings if f.kind == "tampered"]
    assert tampered.strength == "warning" and "do not validate" in tampered.message
    assert "assertion.dataHash.mismatch" in tampered.details["validation_codes"]
    assert tampered.details["validation_state"] == "Invalid"
    assert not [f for f in findings if f.kind == "signed"]
    assert ai_strengths(findings) == {"weak"} and not any(f.strength in ("strong", "declared") for f in findings)
    assert not provenance.declares_ai(findings) and provenance.ai_level(findings) == "weak"
    assert "strong evidence" not in summary(findings).lower() and "weak evidence at most" in summary(findings).lower()


def edit(signer, parent: bytes, relationship: str = "parentOf", editor: str = "Photo Editor") -> bytes:
    """`parent` opened and re-exported by an editor that signs its own manifest with the parent as an ingredient (as
    an editor does with a Firefly picture); the new manifest declares no source type of its own."""
    import c2pa

    uses = {"action": "c2pa.opened" if relationship == "parentOf" else "c2pa.placed",
            "parameters": {"ingredientIds": ["ingredient"]}}
    created = {"action": "c2pa.created", "digitalSourceType": IPTC_VOCABULARY + "compositeCapture"}
    actions = [uses] if relationship == "parentOf" else [created, uses]  # a composite starts anew
    manifest = {"claim_generator_info": [{"name": editor, "version": "2.0"}], "title": "edited.jpg",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    *actions, {"action": "c2pa.color_adjustments"}]}}]}
    output = io.BytesIO()
    with c2pa.Builder(json.dumps(manifest)) as builder:
        builder.add_ingredient(json.dumps({"title": "made.jpg", "relationship": relationship, "label": "ingredient"}),
                               "image/jpeg", io.BytesIO(parent))
        builder.sign(signer, "image/jpeg", io.BytesIO(jpeg(picture(2, (128, 96)))), output)
    return output.getvalue()


def test_an_ai_origin_declared_in_a_parent_manifest_is_found_and_attributed(signer, signed):
    """The store holds the editor's manifest and the generator's: the AI origin of the parent is found, and the
    finding says that the parent's credentials declared it, not the editor's (declared, not verified: the test CA
    is on no trust list)."""
    findings = check(edit(signer, signed))
    (declared,) = [f for f in findings if f.kind == "ai-declared"]
    assert declared.strength == "declared" and declared.message.startswith(
        "The Content Credentials of its parent ingredient 'made.jpg': the action c2pa.created declares")
    (signature,) = [f for f in findings if f.kind == "signed"]
    assert "Photo Editor" in signature.message and signature.details["ingredient_manifests"] == 1
    (chain,) = [f for f in findings if f.kind == "ingredients"]
    assert "its parent ingredient 'made.jpg' (signed by Provenance Test Signer, made with Provenance Test Tool" in chain.message
    assert provenance.ai_level(findings) == "declared" and "declares an AI origin" in summary(findings)
    # two edits deep: the generator's manifest is the grandparent, and is named so
    findings = check(edit(signer, edit(signer, signed), editor="Second Editor"))
    (declared,) = [f for f in findings if f.kind == "ai-declared"]
    assert "its parent ingredient 'made.jpg' of its parent ingredient 'made.jpg'" in declared.message
    # an AI picture composited into a photo: the photo includes AI content
    assert provenance.ai_level(check(edit(signer, signed, relationship="componentOf"))) == "declared"
    # an edited camera capture declares no AI anywhere in its chain
    camera = sign(signer, jpeg(), source_type="digitalCapture", generator="Camera App")
    assert provenance.ai_level(check(edit(signer, camera))) is None
    # the editor's re-export, changed after signing: the parent's claim is weak evidence at most
    assert ai_strengths(check(flipped(edit(signer, signed)))) == {"weak"}


def test_an_expired_certificate_is_not_tampering(tmp_path):
    """Signed while its certificate was valid, read after it expired: the reader's state is Invalid (codes
    signingCredential.expired and .untrusted), but every hash matches. Not "changed after signing": the signature
    matches the file, and the signer is not vouched for; what the credentials declare still counts."""
    import time

    signer = make_signer(valid_for=datetime.timedelta(seconds=2))
    data = sign(signer, jpeg(picture(3)))
    time.sleep(3)
    findings = check(data)
    assert not [f for f in findings if f.kind in ("tampered", "damaged")]
    (signature,) = [f for f in findings if f.kind == "signed"]
    assert signature.details["validation_state"] == "Invalid"
    assert "signingCredential.expired" in signature.details["validation_codes"]
    assert signature.strength == "info" and "nothing changed since signing" in signature.message
    assert "has expired" in signature.message
    assert ai_strengths(findings) == {"declared"}  # what the credentials declare counts, as declared, not verified


def test_the_summary_never_words_a_finding_more_strongly_than_its_strength():
    """The summary's words come from the finding's level: a weak finding that carries a stronger verification key
    (made by hand, or by a later change) still reads as weak evidence, and one without a key as its level's first."""
    mislabelled = provenance.Finding("c2pa", "ai-declared", "weak", "Made by X", {"verification": "trusted signer"})
    assert "strong evidence" not in summary([mislabelled]).lower()
    assert "weak evidence at most" in summary([mislabelled]).lower()
    assert "not verified" in summary([provenance.Finding("xmp", "generator", "declared", "Made by Y")])


@pytest.mark.parametrize("code, kind, strength, ai", [
    ("assertion.dataHash.mismatch", "tampered", "warning", "weak"),
    ("claimSignature.mismatch", "tampered", "warning", "weak"),
    ("assertion.missing", "damaged", "warning", "weak"),
    ("signingCredential.revoked", "credential", "warning", "declared"),
    ("signingCredential.expired", "signed", "info", "declared"),
    ("timeStamp.untrusted", "signed", "info", "declared"),
    ("timeStamp.outsideValidity", "signed", "info", "declared"),
    (None, "signed", "info", "strong"),
])
def test_each_validation_code_is_read_for_what_it_means(credentials, signed, code, kind, strength, ai):
    """The store a reader that trusts the test CA makes (valid, trusted) with one failing code added: only a
    mismatch says the file changed; the strength of the declared AI origin follows: strong only with no failure."""
    import c2pa

    context = c2pa.Context.from_dict({"trust": {"trust_anchors": credentials[1]}})
    with c2pa.Reader("image/jpeg", io.BytesIO(signed), context=context) as reader:
        store = json.loads(reader.json())
    assert store["validation_state"] == "Trusted"
    if code is None:
        findings = provenance._c2pa_findings(store)
        assert (findings[0].kind, findings[0].strength) == (kind, strength) and ai_strengths(findings) == {ai}
        return
    failure = {"code": code, "url": "self#jumbf=/c2pa", "explanation": code}
    store["validation_status"] = [*store.get("validation_status", []), failure]
    store["validation_results"]["activeManifest"]["failure"].append(failure)
    store["validation_state"] = "Invalid"
    findings = provenance._c2pa_findings(store)
    assert (findings[0].kind, findings[0].strength) == (kind, strength)
    assert ai_strengths(findings) == {ai}


def test_a_signed_camera_capture_is_information_not_evidence_of_real(signer):
    findings = check(sign(signer, jpeg(), source_type="digitalCapture", generator="Camera App"))
    assert not provenance.declares_ai(findings)
    (declared,) = [f for f in findings if f.kind == "source-type"]
    assert declared.strength == "info" and "not proof" in declared.message


def test_a_broken_manifest_is_unreadable_not_a_crash(signed):
    broken = bytearray(signed)
    start = broken.find(b"c2pa")
    broken[start + 40 : start + 104] = bytes(range(64))  # garbage inside the manifest store's boxes
    findings = check(bytes(broken))
    assert ("c2pa", "unreadable", "error") in kinds(findings)
    assert any(f.message.startswith("Could not read the Content Credentials") for f in findings)
    assert any(f.kind == "none" and "could be read" in f.message for f in findings)  # nothing else was declared
    assert not provenance.declares_ai(findings)


def test_garbage_that_looks_like_a_manifest_never_raises():
    body = b"JP\x00\x01" + b"\x00\x00\x00\x20jumb" + b"\x00\x00\x00\x18jumdc2pa" + bytes(range(256)) * 4
    data = jpeg()
    findings = check(data[:2] + b"\xff\xeb" + (len(body) + 2).to_bytes(2, "big") + body + data[2:])
    assert findings and not provenance.declares_ai(findings)


# --- XMP, EXIF, PNG text ----------------------------------------------------------------------------------


def test_xmp_digital_source_type_is_read_from_the_packet():
    """Unsigned text anyone can write or copy: an AI origin declared there is "declared", never "strong"."""
    findings = check(with_app1_xmp(jpeg(), xmp_packet()))
    assert ("xmp", "ai-declared", "declared") in kinds(findings)
    assert ("xmp", "software", "info") in kinds(findings)  # CreatorTool, not a known generator
    assert "not verified" in summary(findings) and "strong evidence" not in summary(findings).lower()
    composite = check(with_app1_xmp(jpeg(), xmp_packet("compositeWithTrainedAlgorithmicMedia")))
    assert ("xmp", "ai-declared", "declared") in kinds(composite)
    art = check(with_app1_xmp(jpeg(), xmp_packet("digitalArt")))
    assert ("xmp", "synthetic-declared", "weak") in kinds(art) and not provenance.declares_ai(art)


def test_xmp_in_a_webp_and_in_a_compressed_png_chunk():
    buffer = io.BytesIO()
    picture().save(buffer, "WEBP", xmp=xmp_packet())
    assert ("xmp", "ai-declared", "declared") in kinds(check(buffer.getvalue()))
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp_packet().decode(), zip=True)  # invisible to a search of the raw bytes
    data = png(pnginfo=info)
    assert b"DigitalSourceType" not in data
    assert ("xmp", "ai-declared", "declared") in kinds(check(data))


def test_stable_diffusion_parameters_in_a_png_text_chunk():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a portrait of a smiling woman\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    findings = check(png(pnginfo=info))
    (found,) = [f for f in findings if f.source == "png-text"]
    assert found.strength == "declared" and "Stable Diffusion web UI" in found.message
    assert found.details["excerpt"].startswith("a portrait")


def test_comfyui_prompt_and_workflow_chunks_compressed_or_not():
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps({"3": {"class_type": "KSampler"}}), zip=True)
    info.add_itxt("workflow", json.dumps({"nodes": []}))
    findings = [f for f in check(png(pnginfo=info)) if f.source == "png-text"]
    assert {f.details["key"] for f in findings} == {"prompt", "workflow"}
    assert all(f.strength == "declared" and "ComfyUI" in f.message for f in findings)


@pytest.mark.parametrize("software, shown", [("Adobe Firefly", "Adobe Firefly"), ("DALL-E 3", "DALL·E"),
                                             ("Midjourney v6", "Midjourney"), ("NovelAI", "NovelAI")])
def test_exif_software_of_a_known_generator(software, shown):
    exif = Image.Exif()
    exif[provenance.EXIF_SOFTWARE] = software
    findings = check(jpeg(exif=exif))
    (found,) = [f for f in findings if f.source == "exif"]
    assert (found.kind, found.strength) == ("generator", "declared") and shown in found.message


@pytest.mark.parametrize("software", ["Imagenomic Portraiture 4.0", "Imagenomic Noiseware 5", "Editor de imagen 2.1",
                                      "Editor de imágenes de Windows", "Visor de imágenes 3", "GIMP 2.10", "ImageNet tools"])
def test_retouching_tools_and_editors_are_never_called_generators(software):
    """"imagen" (Google Imagen) was matched inside "Imagenomic" and the Spanish "imagen": a retouched real photo
    was reported as strong evidence of an AI origin."""
    exif = Image.Exif()
    exif[provenance.EXIF_SOFTWARE] = software
    findings = check(jpeg(exif=exif))
    assert provenance.known_generator(software) is None
    assert provenance.ai_level(findings) is None
    assert {(f.kind, f.strength) for f in findings if f.source == "exif"} == {("software", "info")}


@pytest.mark.parametrize("software", ["Google Imagen 3", "Imagen 2", "imagen3"])
def test_google_imagen_is_still_named(software):
    assert provenance.known_generator(software) == "Google Imagen"


GENERATOR_NAMES = [  # (text as files spell it: EXIF Software, XMP CreatorTool, C2PA claim generator; the name shown)
    ("Adobe_Firefly/1.0 adobe_c2pa/0.7.6", "Adobe Firefly"), ("Adobe Firefly", "Adobe Firefly"),
    ("stable-diffusion-webui", "Stable Diffusion"), ("stable_diffusion", "Stable Diffusion"),
    ("Stable Diffusion XL", "Stable Diffusion"), ("StableDiffusion", "Stable Diffusion"),
    ("SDXL 1.0", "Stable Diffusion (SDXL)"), ("sd_xl_base_1.0", "Stable Diffusion (SDXL)"),
    ("FLUX.1 [dev]", "FLUX"), ("FLUX.1.1 [pro] Ultra", "FLUX"), ("flux-schnell", "FLUX"), ("Black Forest Labs", "FLUX"),
    ("Gemini", "Google Gemini"), ("Google Gemini 2.5 Flash Image", "Google Gemini"),
    ("Google Imagen 3", "Google Imagen"), ("Imagen 2", "Google Imagen"), ("imagen3", "Google Imagen"),
    ("leonardo ai", "Leonardo.Ai"), ("Leonardo.Ai", "Leonardo.Ai"),
    ("DALL-E 3", "DALL·E"), ("DALL·E 2", "DALL·E"), ("dalle-3", "DALL·E"),
    ("ChatGPT", "ChatGPT (OpenAI)"), ("GPT-4o", "GPT-4o (OpenAI)"), ("gpt-image-1", "GPT Image (OpenAI)"),
    ("OpenAI API", "OpenAI"), ("OpenAI", "OpenAI"),
    ("Midjourney v6", "Midjourney"), ("NovelAI", "NovelAI"), ("ComfyUI", "ComfyUI"), ("InvokeAI 3.4", "InvokeAI"),
    ("Fooocus 2.1.865", "Fooocus"), ("AUTOMATIC1111", "Stable Diffusion web UI"),
    ("Grok", "Grok (xAI)"), ("xAI Aurora", "Aurora (xAI)"), ("Recraft V3", "Recraft"), ("Krea AI", "Krea"),
    ("Runway Gen-3 Alpha", "Runway"), ("RunwayML", "Runway"), ("Playground v2.5", "Playground"),
    ("playground.ai", "Playground"), ("Ideogram 2.0", "Ideogram"), ("Bing Image Creator", "Bing Image Creator"),
    # never a generator: cameras, editors and retouching tools, and names that only contain a generator's letters
    ("OpenAir Photo Booth", None), ("openai-python", None), ("openai-python/1.54.0", None),
    ("Adobe Photoshop Lightroom Classic 13.0 (Windows)", None), ("Adobe Photoshop 25.0 (Macintosh)", None),
    ("Canon EOS R5 Firmware Version 1.8.1", None), ("GIMP 2.10", None), ("Snapseed", None), ("Snapseed 2.0", None),
    ("Aurora HDR 2019", None), ("f.lux", None), ("Fluxbox", None), ("Imagenomic Portraiture 4.0", None),
    ("Editor de imagen 2.1", None), ("Playground Games Forza Horizon 5", None), ("HDR+ 1.0.641377693z", None),
    ("ILCE-7M4 v2.00", None), ("Photos 9.0", None), ("Runway Photography Studio", None), ("Leonardo 3", None),
]


@pytest.mark.parametrize("text, shown", GENERATOR_NAMES)
def test_generator_names_match_whole_words_as_files_spell_them(text, shown):
    """Separators (_ - . / and others) are normalised and a name matches only as whole words: "OpenAir" and the
    client library "openai-python" were OpenAI (a prefix match), "Adobe_Firefly" and "FLUX.1" were missed."""
    assert provenance.known_generator(text) == shown


def test_camera_tags_and_an_editor_are_information_only():
    exif = Image.Exif()
    exif[provenance.EXIF_MAKE], exif[provenance.EXIF_MODEL] = "Canon", "EOS R5"
    exif[provenance.EXIF_SOFTWARE] = "GIMP 2.10"
    findings = check(jpeg(exif=exif))
    assert {(f.kind, f.strength) for f in findings} == {("camera", "info"), ("software", "info")}
    assert "not evidence that the picture is real" in next(f.message for f in findings if f.kind == "camera")
    assert "declares no AI origin" in summary(findings) and "not evidence that it is real" in summary(findings)


def test_sd_webui_settings_in_a_jpeg_user_comment():
    exif = Image.Exif()
    exif.get_ifd(provenance.EXIF_IFD)[provenance.EXIF_USER_COMMENT] = (
        b"UNICODE\0" + "portrait\nSteps: 30, Sampler: DPM++ 2M, Seed: 7".encode("utf-16-be"))
    assert ("exif", "generator", "declared") in kinds(check(jpeg(exif=exif)))


def test_no_metadata_says_it_is_no_evidence_of_real():
    (found,) = check(png())
    assert (found.source, found.kind, found.strength) == ("file", "none", "info")
    assert "not evidence that the picture is real" in found.message


# --- hostile metadata: "could not read", never an exception ---------------------------------------------------


def test_truncated_xmp():
    packet = xmp_packet()
    findings = check(with_app1_xmp(jpeg(), packet[: len(packet) // 2]))
    assert ("xmp", "unreadable", "error") in kinds(findings)
    assert "truncated" in next(f.message for f in findings if f.source == "xmp")


def test_malformed_xmp_and_entity_tricks():
    broken = xmp_packet().replace(b"</rdf:Description>", b"</rdf:Oops>")
    assert ("xmp", "unreadable", "error") in kinds(check(with_app1_xmp(jpeg(), broken)))
    bomb = (b'<?xpacket begin="" id="x"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            b'<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta><?xpacket end="w"?>')
    findings = check(with_app1_xmp(jpeg(), bomb))
    assert any(f.source == "xmp" and "refused" in f.message for f in findings)


def test_a_five_megabyte_xmp_packet_is_refused_by_size():
    filler = b"<!-- " + b"x" * (5 * 1024 * 1024) + b" -->"
    huge = xmp_packet().replace(b"<rdf:RDF", filler + b"<rdf:RDF")
    data = jpeg() + huge  # after the image (a trailer): PNG/JPEG readers ignore it, the raw search finds it
    findings = check(data)
    assert ("xmp", "unreadable", "error") in kinds(findings)
    assert "larger than" in next(f.message for f in findings if f.source == "xmp")


def test_wrong_types_and_garbage_never_raise():
    exif = Image.Exif()
    exif[provenance.EXIF_SOFTWARE] = 12345  # a number where text belongs
    exif[provenance.EXIF_MAKE] = b"\x00\xff\xfe"
    check(jpeg(exif=exif))
    for data in (b"", b"hello", b"\xff\xd8\xff" + b"\0" * 50, b"\x89PNG\r\n\x1a\n" + b"c2pa" * 100,
                 b"<x:xmpmeta" + b"\0" * 1000, bytes(range(256)) * 100):
        findings = check(data)
        assert findings and all(isinstance(f, provenance.Finding) for f in findings)
    assert check("not bytes")[0].strength == "error"  # type: ignore[arg-type]


def test_the_spectrum_is_a_picture_and_shows_a_periodic_grid():
    smooth = spectrum(picture(3, (300, 300)))
    assert smooth.size == (256, 256) and smooth.mode == "L"
    grid = np.zeros((256, 256), np.uint8)
    grid[::4, ::4] = 255  # up-sampling's checkerboard, exaggerated: peaks at 1/4 of the sampling rate
    view = np.asarray(spectrum(Image.fromarray(grid)))
    assert view[128 + 64, 128] > np.median(view) + 60 and view[128, 128 + 64] > np.median(view) + 60
