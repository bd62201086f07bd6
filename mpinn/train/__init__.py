"""A training run: config, loop, state, stopping decisions, checkpoints, problem, evaluation, early
stopping, L-BFGS, logs, rebalancing, predict.
May import: errors, atomic, options, nn, data, parallel, preprocessing."""
