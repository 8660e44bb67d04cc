"""imgcls: an image-classification experiment lab."""

__version__ = "0.1.0"


def load(run_dir, checkpoint: str = "best", device: str = "cpu"):
    """A trained run, ready to predict: `imgcls.load("runs/x").predict(["cat.jpg"])`."""
    from imgcls.deploy.predictor import load as _load

    return _load(run_dir, checkpoint, device)
