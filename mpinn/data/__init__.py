"""Data without MPI: which rows a rank owns and their order, HDF5 reading and streaming, data files, input checks.
May import: errors, atomic, options, nn."""
