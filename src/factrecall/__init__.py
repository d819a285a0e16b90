"""factrecall: why two-stage training memorises and mixed training teaches fact recall (arXiv 2505.16178)."""

__version__ = "0.1.0"
