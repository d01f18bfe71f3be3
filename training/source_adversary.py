"""Source-adversarial training: features from which a small head cannot tell an image's source, within its class.

In the shared data each source brings its own look (video frames, aligned crops, studio light, a generator's
framing), and a model can learn "looks like source S" instead of "real" or "fake". Here a second head guesses,
from the detector's pooled features, which source an image came from, and a gradient reversal layer (Ganin &
Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015) trains the backbone to make that guess
fail. The guess is class-conditional: a real photo's source is guessed among the sources of real photos only, a
fake's among the sources of fakes (self-blended pseudo-fakes count as one source of fakes), so that the features
keep what separates real from fake and lose what separates one real source from another, and one kind of fake from
another. Measured on the shared data (docs/generalisation/source_adversarial.md): no gain that held over two seeds.

The head lives only during training: `SourceAdversary.detector` is the timm model that is saved and served.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from torch import nn

from detector.model import LABEL_NAMES

PSEUDO_FAKES = "pseudo-fakes"  # the source name self-blended fakes take, whichever real photo they came from


@dataclass(frozen=True)
class SourceDomains:
    """The (label, source) pairs of a training set, each one class of the source head, e.g. "real/ffhq_sample"."""

    column: str
    names: tuple[str, ...]

    @classmethod
    def from_dataset(cls, dataset: datasets.Dataset, column: str, pseudo_fakes: bool = False) -> "SourceDomains":
        sources = np.array(dataset[column]).astype(str)
        targets = np.array(dataset["target"])
        pairs = {f"{LABEL_NAMES[target]}/{source}" for source, target in zip(sources, targets)}
        if pseudo_fakes:
            pairs.add(f"fake/{PSEUDO_FAKES}")
        return cls(column, tuple(sorted(pairs)))

    def index(self, source: str, target: int) -> int:
        return self.names.index(f"{LABEL_NAMES[target]}/{source}")

    def class_mask(self) -> torch.Tensor:
        """[classes, domains]: True where the domain holds images of that class."""
        labels = [name.split("/", 1)[0] for name in self.names]
        return torch.tensor([[label == name for label in labels] for name in LABEL_NAMES])


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight: float):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; the gradient flowing back is multiplied by -`weight`."""
    return _ReverseGradient.apply(x, weight)


def reversal_weight(peak: float, step: int, total_steps: int) -> float:
    """DANN's schedule, a pure function of the step: 0 at the start, rising to `peak` as training progresses
    (2 / (1 + exp(-10 p)) - 1 of it at progress p), so that the source head learns before it pushes back."""
    progress = min(1.0, step / max(1, total_steps))
    return peak * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


class SourceAdversary(nn.Module):
    """The detector with a source head behind a gradient reversal. `forward(pixels)` is the detector's logits;
    `forward(pixels, reversal=w)` also returns the source head's logits, with the backbone's gradient from them
    reversed and scaled by `w`."""

    def __init__(self, detector: nn.Module, domains: SourceDomains, hidden: int = 256):
        super().__init__()
        self.detector = detector
        self.head = nn.Sequential(nn.Linear(detector.num_features, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, len(domains.names)))
        self.register_buffer("class_domains", domains.class_mask(), persistent=False)

    def forward(self, pixels: torch.Tensor, reversal: float | None = None):
        if reversal is None:
            return self.detector(pixels)
        pooled = self.detector.forward_head(self.detector.forward_features(pixels), pre_logits=True)
        return self.detector.get_classifier()(pooled), self.head(reverse_gradient(pooled, reversal))

    def source_loss(self, source_logits: torch.Tensor, domains: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the source guess among the sources of each image's own class."""
        logits = source_logits.float().masked_fill(~self.class_domains[targets], float("-inf"))
        return nn.functional.cross_entropy(logits, domains)


def detector_of(model: nn.Module) -> nn.Module:
    """The servable timm model inside an unwrapped training model."""
    return model.detector if isinstance(model, SourceAdversary) else model
