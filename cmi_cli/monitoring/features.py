"""Image and prediction features, now in :mod:`cmi_cli.reference.features`; importable here too."""

from cmi_cli.reference.features import (  # noqa: F401
    FEATURE_SIDE,
    SoftmaxSummary,
    colourfulness,
    fast_argmax,
    image_features,
    laplacian_variance,
    prediction_features,
    summarize_scores,
)
