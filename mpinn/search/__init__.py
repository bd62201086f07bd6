"""Hyper-parameter search, tasks on rank groups: GridSearchCV and RandomizedSearchCV (api.py), HalvingGridSearchCV and HalvingRandomSearchCV (halving.py), loaded on first use.
May import: errors, atomic, options, nn, data, parallel, preprocessing, train, estimators."""


def __getattr__(name):
    if name in ("GridSearchCV", "RandomizedSearchCV"):
        from mpinn.search import api

        return getattr(api, name)
    if name in ("HalvingGridSearchCV", "HalvingRandomSearchCV"):
        from mpinn.search import halving

        return getattr(halving, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
