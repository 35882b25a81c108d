"""cmi-cli: food-photo segmentation from data to service, from one command line."""

__version__ = "0.1.0"
