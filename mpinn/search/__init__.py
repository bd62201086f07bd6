"""Hyper-parameter search, tasks on rank groups: GridSearchCV and RandomizedSearchCV (api.py, loaded on first use).
May import: errors, atomic, options, nn, data, parallel, preprocessing, train, estimators."""


def __getattr__(name):
    if name in ("GridSearchCV", "RandomizedSearchCV"):
        from mpinn.search import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
