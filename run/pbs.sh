#!/usr/bin/env bash
# Train with mpinn under PBS Pro / OpenPBS / Torque, one MPI rank per line of $PBS_NODEFILE.
#
#   qsub run/pbs.sh                                  (iris defaults)
#   qsub -v MPINN_ARGS="--data big.h5 --hidden 64" run/pbs.sh
#   run/pbs.sh --data big.h5 --hidden 64             (inside an interactive job, qsub -I)
#
# qsub passes no arguments to a script, so training args come from "$@" or else MPINN_ARGS
# (split on whitespace); with neither, writes out/iris.h5 and trains on it. Checkpoints go to
# $PBS_O_WORKDIR/checkpoints/$PBS_JOBID (override: CHECKPOINT_DIR) every CHECKPOINT_EVERY
# epochs (default 10) and at the end. Training runs with --resume: a rerun job (qrerun keeps
# $PBS_JOBID), or a new one given the same CHECKPOINT_DIR, continues from the newest checkpoint.
# Exit 75: mpinn was told to stop (SIGTERM/SIGUSR1), wrote a checkpoint; rerun to continue.
# Adapt the #PBS lines, the module loads and the venv path to your site: see run/README.md.
#
#PBS -N mpinn
#PBS -l select=1:ncpus=4:mpiprocs=4
#PBS -l walltime=00:30:00
#PBS -j oe
set -euo pipefail

# module load python mpi         # site-specific: the MPI that mpi4py was built against
# . "$HOME/mpinn/.venv/bin/activate"

cd "${PBS_O_WORKDIR:?not inside a PBS job}"
nodefile=${PBS_NODEFILE:?not inside a PBS job}
np=${NP:-$(wc -l < "$nodefile")}

# One BLAS thread per rank unless OMP_NUM_THREADS is set (e.g. ompthreads=N in the select).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export OPENBLAS_NUM_THREADS="$OMP_NUM_THREADS"
export MKL_NUM_THREADS="$OMP_NUM_THREADS"

mpinn=$(command -v mpinn) || { echo "$0: mpinn is not on PATH (activate the venv)" >&2; exit 2; }
# MPIEXEC as shell words, quotes honoured: a launcher's path may hold spaces.
split_words() { local -n into=$1; mapfile -t into < <(printf '%s' "$2" | xargs -r printf '%s\n'); (( ${#into[@]} )) \
    || { echo "$0: cannot split $3 into words: $2" >&2; exit 2; }; }
split_words launcher "${MPIEXEC:-mpiexec}" MPIEXEC
launcher+=(-n "$np" --hostfile "$nodefile")

if [[ $# -eq 0 && -n "${MPINN_ARGS:-}" ]]; then
    split_words args "$MPINN_ARGS" MPINN_ARGS
    set -- ${args[@]+"${args[@]}"}
fi
if [[ $# -eq 0 ]]; then
    mkdir -p out
    "$mpinn" data iris out/iris.h5
    set -- --data out/iris.h5 --test-fraction 0.2 --seed 42 --hidden 10 --solver sgd \
           --epochs 1000 --log-every 100
fi
ckpt=${CHECKPOINT_DIR:-$PBS_O_WORKDIR/checkpoints/${PBS_JOBID:-local}}

echo "job ${PBS_JOBID:-?}: $np ranks x $OMP_NUM_THREADS BLAS threads, checkpoints in $ckpt"
"${launcher[@]}" "$mpinn" info
"${launcher[@]}" "$mpinn" train --checkpoint "$ckpt" --checkpoint-every "${CHECKPOINT_EVERY:-10}" --resume "$@"
