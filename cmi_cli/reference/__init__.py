"""A model's drift reference: the features of photos and predictions, and their table.

Below training (which saves a run's reference) and export (which copies it beside the ONNX
model), above data; monitoring and serving read it.
"""
