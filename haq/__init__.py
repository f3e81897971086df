"""haq: hardware-aware, robustness-aware mixed-precision quantization search."""

__version__ = "0.1.0"
