"""The network in pure numpy, never MPI: the MLP, activations, optimizers, fused update, metrics, fitted model.
May import: errors, atomic, options."""
