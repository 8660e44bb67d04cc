"""Using trained runs: prediction (`Predictor`, `imgcls.load`) and export (ONNX,
TorchScript)."""

from typing import Literal

# here, not in deploy.export, so that the command line can offer the formats without
# importing torch
ExportFormat = Literal["onnx", "torchscript"]
