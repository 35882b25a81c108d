"""Full-resolution masks from low-resolution logits (numpy, no torch).

The implementation lives in :mod:`cmi_cli.data.upsample`, a layer that training (evaluation)
may import too; export, serving and batch prediction import it from here or from there.
"""

from cmi_cli.data.upsample import (
    BAND_BYTES,
    source_positions,
    upsample_argmax,
    upsample_labels,
)

__all__ = ["BAND_BYTES", "source_positions", "upsample_argmax", "upsample_labels"]
