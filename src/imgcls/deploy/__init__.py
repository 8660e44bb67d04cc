"""Using trained runs: prediction (`Predictor`, `imgcls.load`) and export (ONNX,
TorchScript)."""
