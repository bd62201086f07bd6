"""The search object `mpinn search` runs, built from its options and the parsed grid
(cli/search_grid.py): GridSearchCV, RandomizedSearchCV or a halving search over
Pipeline(scale, mlp); the checks of the halving and scoring options."""

from __future__ import annotations

from mpinn.cli.search_grid import estimator_values, scaler_step
from mpinn.errors import InputError


def make_search(args, task, fixed, varied, scoring, n_rows):
    """GridSearchCV (or RandomizedSearchCV) over a Pipeline(scale, mlp) built from the grid."""
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.pipeline import Pipeline

    import mpinn

    from mpinn.train.config import TrainConfig, estimator_params_from_config

    scale = fixed.pop("scale", TrainConfig().scale)  # `mpinn train`'s default
    cls = mpinn.MLPClassifier if task == "classify" else mpinn.MLPRegressor
    mlp = cls(**estimator_params_from_config(TrainConfig(**fixed).to_dict()))
    fixed["scale"] = scale
    base = Pipeline([("scale", scaler_step(scale)), ("mlp", mlp)])
    grid = dict(estimator_values(field, values) for field, values in varied.items())
    cv = (StratifiedKFold if args.stratified else KFold)(args.cv, shuffle=args.seed is not None,
                                                          random_state=args.seed)
    common = dict(scoring=scoring, cv=cv, refit=False, group_size=args.group_size, allocation=args.allocation,
                  checkpoint=args.checkpoint)
    if args.halving:
        return _make_halving(args, base, grid, fixed, varied, common, n_rows)
    if args.n_iter is not None:
        return mpinn.RandomizedSearchCV(base, grid, n_iter=args.n_iter, random_state=args.seed or 0, **common)
    return mpinn.GridSearchCV(base, grid, **common)


def check_halving_options(args):
    given = [name for name, on in (("--factor", args.factor != 3), ("--resource", args.resource != "samples"),
                                   ("--min-resources", args.min_resources is not None),
                                   ("--aggressive-elimination", args.aggressive_elimination),
                                   ("--warm-start-promoted", args.warm_start_promoted)) if on]
    if given and not args.halving:
        raise InputError(f"{given[0]}: only with --halving")
    if args.factor <= 1:
        raise InputError(f"--factor: must be > 1, got {args.factor}")
    if args.warm_start_promoted and args.resource != "epochs":
        raise InputError("--warm-start-promoted: needs --resource epochs (a fit on other rows cannot be continued)")
    if args.min_resources is not None and args.min_resources not in ("exhaust", "smallest"):
        try:
            args.min_resources = int(args.min_resources)
        except ValueError:
            raise InputError(f"--min-resources: expected a number, exhaust or smallest, got {args.min_resources!r}") \
                from None
        if args.min_resources < 1:
            raise InputError(f"--min-resources: must be >= 1, got {args.min_resources}")


def _make_halving(args, base, grid, fixed, varied, common, n_rows):
    """HalvingGridSearchCV (HalvingRandomSearchCV with --n-iter); --resource epochs grows the
    MLP's max_iter up to the grid's fixed epochs."""
    import mpinn

    from mpinn.train.config import TrainConfig

    if not isinstance(common["scoring"], (str, type(None))):
        raise InputError("--scoring: --halving ranks the candidates by one scorer; give one name")
    kw = dict(factor=args.factor, aggressive_elimination=args.aggressive_elimination,
              warm_start_promoted=args.warm_start_promoted, random_state=args.seed or 0, **common)
    if args.resource == "epochs":
        if "epochs" in varied:
            raise InputError("--grid: epochs: the resource of --halving --resource epochs cannot be searched; give "
                             "one value, the epochs of the last iteration")
        kw.update(resource="mlp__max_iter", max_resources=TrainConfig(**{k: v for k, v in fixed.items()
                                                                          if k != "scale"}).epochs)
    if args.min_resources is not None:
        most = kw["max_resources"] if args.resource == "epochs" else n_rows
        if isinstance(args.min_resources, int) and args.min_resources > most:
            raise InputError(f"--min-resources {args.min_resources}: more than the {most} "
                             f"{'epochs of the grid' if args.resource == 'epochs' else 'rows of --data'}")
        kw["min_resources"] = args.min_resources
    if args.n_iter is not None:
        return mpinn.HalvingRandomSearchCV(base, grid, n_candidates=args.n_iter, **kw)
    return mpinn.HalvingGridSearchCV(base, grid, **kw)


def parse_scoring(text):
    if text is None:
        return None
    from sklearn.metrics import get_scorer_names

    names = [s.strip() for s in text.split(",")]
    unknown = [s for s in names if s not in get_scorer_names()]
    if unknown or len(set(names)) != len(names):
        raise InputError(f"--scoring: {', '.join(unknown) or 'repeated names'}: not scikit-learn scorer names "
                         "(e.g. accuracy, neg_log_loss, f1_macro, r2, neg_mean_squared_error)")
    return names[0] if len(names) == 1 else names
