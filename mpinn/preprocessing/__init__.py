"""Feature scaling with statistics reduced across ranks: the scikit-learn scalers (scalers.py),
their pooled statistics (stats.py) and `mpinn train --scale` (training.py).
May import: errors, atomic, options, nn, data, parallel."""

from mpinn.options import SCALES
from mpinn.preprocessing.scalers import MinMaxScaler, StandardScaler
from mpinn.preprocessing.stats import block_moments, combine_moments, local_minmax, reduce_moments, row_blocks
from mpinn.preprocessing.training import (apply_scaler, fit_scaler, scale_problem, scaler_arrays, scaler_from_arrays,
                                          scaler_kind)

__all__ = ["StandardScaler", "MinMaxScaler", "SCALES", "fit_scaler", "scale_problem", "apply_scaler", "scaler_kind",
           "scaler_arrays", "scaler_from_arrays", "block_moments", "combine_moments", "local_minmax",
           "reduce_moments", "row_blocks"]
