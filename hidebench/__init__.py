"""hidebench: a benchmark suite for privacy attacks on InstaHide and Mixup."""

__version__ = "0.1.0"
