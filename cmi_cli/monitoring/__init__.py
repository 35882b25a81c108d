"""Watching a served model: image and prediction features, drift reports, robustness.

``features`` is numpy/Pillow only, so the serving path can import it without torch or pandas.
"""
