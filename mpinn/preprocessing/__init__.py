"""Feature scaling with statistics reduced across ranks: the scikit-learn scalers (scalers.py),
their pooled statistics (stats.py) and `mpinn train --scale` (training.py).
May import: errors, options, nn, data, parallel."""

from mpinn.options import SCALES
from mpinn.preprocessing.scalers import MinMaxScaler, StandardScaler
from mpinn.preprocessing.training import (apply_scaler, fit_scaler, scale_problem, scaler_arrays, scaler_from_arrays,
                                          scaler_kind)

__all__ = ["StandardScaler", "MinMaxScaler", "SCALES", "fit_scaler", "scale_problem", "apply_scaler", "scaler_kind",
           "scaler_arrays", "scaler_from_arrays"]
