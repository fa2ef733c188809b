"""Custom ONNX ops of the ``edgesqueeze`` domain (with their local functions) and the CUDA plugin library."""
