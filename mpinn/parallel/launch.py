"""Launch checks that need no MPI: is this process one of several that a launcher started?"""

from __future__ import annotations

import os

from mpinn.errors import InputError


class LaunchMismatch(InputError):
    """Several launcher tasks, each with an MPI world of one rank."""


# Task counts that launchers give each process they start: srun's step, PMI (MPICH's Hydra,
# srun --mpi=pmi2), Open MPI's launcher. Not SLURM_NTASKS: a batch script has it too, and a
# one-process command there (e.g. `mpinn data`) is right to see one rank.
LAUNCHER_TASK_VARS = ("SLURM_STEP_NUM_TASKS", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def check_launch(size: int, environ=os.environ):
    """InputError when a launcher started several tasks but MPI sees a world of one: every
    task would run alone, as a separate job, over the same files. Happens when srun cannot
    start this MPI (Slurm's MpiDefault=none) or mpi4py was built against another MPI."""
    if size != 1:
        return
    for name in LAUNCHER_TASK_VARS:
        tasks = environ.get(name, "")
        if tasks.isdigit() and int(tasks) > 1:
            raise LaunchMismatch(
                f"started as {tasks} separate 1-rank jobs ({name}={tasks}, but MPI sees 1 rank): the launcher could "
                "not start this MPI; under Slurm use `srun --mpi=pmi2` (see `srun --mpi=list`) or "
                "MPIEXEC=mpiexec, or build mpi4py against the site MPI (docs/clusters.md)")
