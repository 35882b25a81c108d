"""The reference feature table, now in :mod:`cmi_cli.reference.table`; importable here too."""

from cmi_cli.reference.table import (  # noqa: F401
    DEFAULT_TOP_CLASSES,
    IMAGE_COLUMNS,
    PREDICTION_COLUMNS,
    REFERENCE_NAME,
    SHARE_PREFIX,
    Corrupt,
    FeatureTable,
    Predict,
    compute_features,
    flatten_row,
    load_table,
    prediction_row,
    save_table,
    table_from_log,
    table_from_rows,
    top_classes,
)
