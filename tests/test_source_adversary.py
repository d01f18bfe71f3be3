"""Source-adversarial training: the gradient reversal, the class-conditional source guess, and a real run with it."""
from __future__ import annotations

import json

import datasets
import pytest
import torch

from conftest import EXAMPLES, SHARED_DATA, TEST_ARCHITECTURE, TEST_IMG_SIZE, small_manifest
from detector import Detector
from detector.model import LABEL_NAMES, create_model, load_model
from training import train
from training.data import PseudoFakes, attach_transform, collate, train_transform
from training.source_adversary import (PSEUDO_FAKES, SourceAdversary, SourceDomains, reversal_weight,
                                       reverse_gradient)

REAL, FAKE = LABEL_NAMES.index("real"), LABEL_NAMES.index("fake")


def test_reversal_is_identity_forward_and_flips_the_gradient():
    x = torch.randn(3, 5, requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.arange(5.0)).sum().backward()
    assert torch.allclose(x.grad, -0.3 * torch.arange(5.0).expand(3, 5))


def test_reversal_weight_rises_from_zero_to_its_peak():
    weights = [reversal_weight(0.5, step, 100) for step in range(101)]
    assert weights[0] == 0.0
    assert all(a < b for a, b in zip(weights, weights[1:]))
    assert weights[-1] == pytest.approx(0.5, abs=1e-4) and weights[20] == pytest.approx(0.5 * 0.7616, abs=1e-3)
    assert reversal_weight(0.5, 500, 100) == weights[-1]  # past the end: the peak


def domains_of(pairs: list[tuple[str, int]], pseudo_fakes: bool = False) -> SourceDomains:
    dataset = datasets.Dataset.from_dict({"source": [s for s, _ in pairs], "target": [t for _, t in pairs]})
    return SourceDomains.from_dataset(dataset, "source", pseudo_fakes)


def test_domains_are_label_and_source_pairs():
    domains = domains_of([("dfdc", REAL), ("dfdc", FAKE), ("ffhq", REAL), ("gan", FAKE), ("ffhq", REAL)], True)
    assert domains.names == ("fake/dfdc", "fake/gan", f"fake/{PSEUDO_FAKES}", "real/dfdc", "real/ffhq")
    assert domains.names[domains.index("dfdc", REAL)] == "real/dfdc"
    assert domains.names[domains.index(PSEUDO_FAKES, FAKE)] == f"fake/{PSEUDO_FAKES}"
    mask = domains.class_mask()
    assert [domains.names[i] for i in mask[REAL].nonzero().flatten()] == ["real/dfdc", "real/ffhq"]
    assert mask.sum() == len(domains.names) and not (mask[REAL] & mask[FAKE]).any()


def test_the_source_guess_is_among_the_sources_of_the_image_class_only():
    """A real photo's source logits for fake sources do not count: pushing them up changes nothing."""
    domains = domains_of([("a", REAL), ("b", REAL), ("a", FAKE), ("c", FAKE)])
    adversary = SourceAdversary(create_model(TEST_ARCHITECTURE, img_size=TEST_IMG_SIZE), domains)
    logits = torch.zeros(1, len(domains.names))
    target, truth = torch.tensor([REAL]), torch.tensor([domains.index("a", REAL)])
    base = adversary.source_loss(logits, truth, target)
    assert base.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())  # two real sources, equal odds
    logits[0, domains.index("c", FAKE)] = 50.0
    assert adversary.source_loss(logits, truth, target).item() == pytest.approx(base.item())
    logits[0, domains.index("b", REAL)] = 50.0
    assert adversary.source_loss(logits, truth, target).item() > 10


def test_the_backbone_learns_against_the_source_head():
    """One step: the source head's gradient is its loss's, the backbone's is the reversed one (scaled), and the
    forward without `reversal` is the detector itself."""
    torch.manual_seed(0)
    domains = domains_of([("a", REAL), ("b", REAL), ("c", FAKE)])
    adversary = SourceAdversary(create_model(TEST_ARCHITECTURE, img_size=TEST_IMG_SIZE), domains).eval()
    pixels = torch.randn(2, 3, TEST_IMG_SIZE, TEST_IMG_SIZE)
    assert torch.equal(adversary(pixels), adversary.detector(pixels))
    targets, sources = torch.tensor([REAL, REAL]), torch.tensor([domains.index("a", REAL), domains.index("b", REAL)])

    def grads(weight):
        adversary.zero_grad()
        _, source_logits = adversary(pixels, reversal=weight)
        adversary.source_loss(source_logits, sources, targets).backward()
        return adversary.detector.conv1.weight.grad.clone(), adversary.head[0].weight.grad.clone()

    backbone_plain, head_plain = grads(-1.0)  # -1: the plain gradient, as if nothing were reversed
    backbone, head = grads(0.5)
    assert torch.allclose(head, head_plain)
    assert torch.allclose(backbone, -0.5 * backbone_plain, atol=1e-7) and backbone.abs().sum() > 0


def test_batches_name_each_image_source_and_pseudo_fakes_their_own(tmp_path):
    from PIL import Image

    Image.open(EXAMPLES / "real_pixabay_1.jpg").save(tmp_path / "a.jpg")
    dataset = datasets.Dataset.from_dict({"image": [str(tmp_path / "a.jpg")] * 3, "target": [REAL, FAKE, REAL],
                                          "source": ["pixabay", "gan", "ffhq"]})
    dataset = dataset.cast_column("image", datasets.Image(decode=False))
    domains = SourceDomains.from_dataset(dataset, "source", pseudo_fakes=True)
    config = {"input_size": (3, 48, 48), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    plain = collate(list(attach_transform(dataset, train_transform(config), domains=domains)))
    assert [domains.names[i] for i in plain["domain"]] == ["real/pixabay", "fake/gan", "real/ffhq"]
    blended = collate(list(attach_transform(dataset, train_transform(config), PseudoFakes(1.0), domains=domains)))
    assert blended["target"].tolist() == [FAKE] * 3
    assert [domains.names[i] for i in blended["domain"]] == [f"fake/{PSEUDO_FAKES}", "fake/gan", f"fake/{PSEUDO_FAKES}"]
    assert "domain" not in collate(list(attach_transform(dataset, train_transform(config))))


@pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")
def test_a_source_adversarial_run_trains_resumes_and_saves_a_plain_detector(tmp_path):
    table = small_manifest(tmp_path / "faces.csv", {("utkface_adults", "real"): 5, ("pixabay_portraits", "real"): 5,
                                                    ("sdfd_diffusion", "fake"): 5, ("gan_faces_site", "fake"): 5})
    argv = ["--dataset", str(table), "--image-column", "file", "--source-column", "source", "--img-size",
            str(TEST_IMG_SIZE), "--workers", "0", "--batch-size", "4", "--max-steps-per-epoch", "2", "--mixed-precision",
            "no", "--scheduler", "cosine", "--lr", "1e-3", "--pseudo-fakes", "0.3", "--source-adversarial", "0.5",
            "--skip-image-check"]
    run = [*argv, "--output-dir", str(tmp_path / "run")]
    assert train.main([*run, "--epochs", "1"])["step"] == 2
    assert train.main([*run, "--epochs", "2", "--resume"])["step"] == 4
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(row["train_source_loss"] > 0 for row in rows)
    # the head is not in the servable model
    assert set(load_model(tmp_path / "run" / "best").model.state_dict()) == set(create_model(train.DEFAULT_ARCHITECTURE, img_size=TEST_IMG_SIZE).state_dict())
    detector = Detector.from_pretrained(tmp_path / "run" / "best")
    assert set(detector.analyze(EXAMPLES / "real_pixabay_1.jpg").probabilities) == set(LABEL_NAMES)
    with pytest.raises(SystemExit, match="needs --source-column"):
        train.main([arg for arg in argv if arg not in ("--source-column", "source")] + ["--output-dir", str(tmp_path / "x")])
