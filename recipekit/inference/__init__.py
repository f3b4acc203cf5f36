"""A finished run as a predictor (PyTorch or its ONNX export): open it, predict new rows as it predicted its own."""
