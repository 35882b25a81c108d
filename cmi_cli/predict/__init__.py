"""``cmi predict``: masks, overlays and a per-class table for many photos.

``sources`` finds the photos (files, folders, globs, list files, parquet), ``segment`` is the
per-batch function (bytes -> full-size mask and confidence -> per-class rows) that local
workers and a distributed engine share, ``writers`` writes masks, overlays, the journal, the
table and the errors file atomically, and ``runner`` drives workers, progress and resume.
"""
