"""imgcls: an image-classification experiment lab."""

__version__ = "0.1.0"
