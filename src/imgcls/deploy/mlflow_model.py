"""A trained run as an MLflow model: MLflow runs this file when the model is loaded
(`mlflow.pyfunc.load_model("runs:/<id>/model")`, MLflow's "models from code"), with the
run's config, preprocessing and best weights as the model's artifact `run`. It predicts on
what `imgcls predict` takes: image files (a list of paths, or a DataFrame with a `path`
column) or uint8 arrays (one image HWC, or a batch NHWC, any size, RGB or gray), and
returns one row of class probabilities per image, a column per class: the same numbers
as `imgcls.load(RUN).probabilities`."""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


def _paths(model_input: Any) -> list[str] | None:
    if isinstance(model_input, pd.DataFrame) and "path" in model_input.columns:
        return [str(p) for p in model_input["path"]]
    if isinstance(model_input, list | tuple) and all(isinstance(p, str) for p in model_input):
        return list(model_input)
    return None


def _batch(arrays: np.ndarray) -> np.ndarray:
    """uint8 images, one per row: HW (gray), HWC, NHW (gray) or NHWC."""
    single = arrays.ndim == 2 or (arrays.ndim == 3 and arrays.shape[-1] in (1, 3))
    return (arrays[None] if single else arrays).astype(np.uint8)


class ImgclsModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from imgcls.deploy.predictor import load

        self.predictor = load(context.artifacts["run"])

    def predict(self, context: Any, model_input: Any, params: dict | None = None
                ) -> pd.DataFrame:
        predictor = self.predictor
        paths = _paths(model_input)
        if paths is not None:
            from pathlib import Path

            images, _, problems = predictor.read([Path(p) for p in paths])
            if problems:
                raise ValueError("unreadable images: " + "; ".join(problems))
        else:
            images = predictor.to_array(list(_batch(np.asarray(model_input))))
        probabilities = predictor.probabilities(images).numpy()
        return pd.DataFrame(probabilities, columns=predictor.classes)


mlflow.models.set_model(ImgclsModel())
