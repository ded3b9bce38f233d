"""Inference: the served model and its cache, dynamic batching, the drift monitor, ONNX export."""
