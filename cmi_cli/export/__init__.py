"""Turning checkpoints into deployable artifacts: ONNX export, validation and lineage metadata.

``metadata`` and ``ort_predict`` import no torch (the serving path uses them); ``onnx_export``
and ``validate_onnx`` import torch inside their functions.
"""
