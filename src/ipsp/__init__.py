"""IPSP: image processing and storage pipeline for real-time traffic analytics."""

__version__ = "0.1.0"
