"""Benchmarks that ship with the library: `frugalnet bench` (sparse inference, side by side with PyTorch, CSR, scipy and
ONNX Runtime) and side-by-side training-step timing. Nothing below this package imports it."""
