"""A small CNN for scikit-learn's 8x8 digits, with a MobileNet-style depthwise-separable block.

``make_model()`` is the factory that ``edgesqueeze export examples/digits_model.py:make_model`` calls.
"""
import torch
from torch import nn


class DigitsCNN(nn.Module):
    """conv-bn-relu x2, max-pool, a depthwise-separable block (dw 3x3 + BN + ReLU6, pw 1x1 + BN + ReLU), MLP head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
            nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(64 * 4 * 4, 64), nn.ReLU(),
                                  nn.Linear(64, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def make_model() -> nn.Module:
    """Return an untrained DigitsCNN (load trained weights with --weights)."""
    return DigitsCNN()
