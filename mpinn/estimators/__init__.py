"""scikit-learn-style MLPClassifier and MLPRegressor: their plumbing, fit on any rank count, mpinn.load, export.
May import: errors, atomic, options, nn, data, parallel, preprocessing, train."""

from mpinn.estimators.classes import MLPClassifier, MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
