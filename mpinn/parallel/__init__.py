"""Everything between ranks: comm.py (the only mpi4py importer), agree.py, the step strategies, balance, faults.
May import: errors, atomic, options, nn, data."""
