"""Where time and memory go: torch.profiler runs of training and inference, and data loading."""
