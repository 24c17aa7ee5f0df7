"""The classifiers a data owner trains on a release: the fast airbench-style net (fast.py), a
small ConvNet sized for 2 CPU cores, and
torchvision's ResNet-18 with the 32x32 stem of the InstaHide authors' code (3x3 stride-1 first
convolution, no max pool; Huang et al. 2020 use ResNet-18 for their CIFAR-10 figures)."""
from __future__ import annotations

import torch
from torch import nn

from hidebench.defenses.utility.config import MODELS
from hidebench.types import HidebenchError


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """Four conv-BN-ReLU stages (width w, 2w, 4w, 8w), each but the first after a 2x2 max pool,
    then global average pooling and a linear layer: about 1.2 M parameters at w=32."""

    def __init__(self, n_classes: int, in_channels: int = 3, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(in_channels, w), _block(w, w), nn.MaxPool2d(2),
            _block(w, 2 * w), nn.MaxPool2d(2),
            _block(2 * w, 4 * w), nn.MaxPool2d(2),
            _block(4 * w, 8 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8 * w, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resnet18_32(n_classes: int) -> nn.Module:
    """torchvision's ResNet-18 adapted to 32x32 input (3x3 stride-1 stem, no max pool), as the
    InstaHide authors train it; also the federated client's 'resnet18'."""
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=n_classes)
    net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def make_classifier(name: str, n_classes: int, width: int = 32, widths=(64, 128, 128), in_channels: int = 3) -> nn.Module:
    """The classifier `name` (MODELS); width: the ConvNet's, widths: the fast net's three groups."""
    if name == "fast":
        from hidebench.defenses.utility.fast import FastNet

        return FastNet(n_classes, tuple(widths), in_channels)
    if name == "convnet":
        return ConvNet(n_classes, width=width)
    if name == "resnet18":
        return resnet18_32(n_classes)
    raise HidebenchError(f"unknown model {name!r}; use one of {', '.join(MODELS)}")
