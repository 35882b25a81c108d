"""Training, evaluation and segmentation metrics (imported only by commands that train)."""
