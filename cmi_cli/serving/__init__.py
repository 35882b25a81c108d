"""``cmi serve``: an HTTP API, a web page, Prometheus metrics and a prediction log for a model.

The ONNX path imports no torch: ``app`` (the FastAPI factory), ``predictor`` (ONNX Runtime, or
torch loaded lazily for checkpoints), ``images`` (safe decoding), ``store`` (prediction log),
``metrics`` (Prometheus), ``batching`` (optional micro-batching).
"""
