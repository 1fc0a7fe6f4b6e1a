"""protocaffe's version, on the bottom floor so that every module may name it (model.py's
header does)."""

__version__ = "0.1.0"
