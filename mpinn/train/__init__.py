"""A training run: config, loop, state, checkpoints, problem, evaluation, early stopping, L-BFGS, logs, predict.
May import: errors, atomic, options, nn, data, parallel, preprocessing."""
