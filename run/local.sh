#!/usr/bin/env bash
# Train with mpinn on NP local MPI ranks.
#
#   run/local.sh NP [mpinn train args...]
#
# With no training args: writes out/iris.h5 (built-in iris data) and trains on it into
# out/iris-checkpoints. Uses the `mpinn` found on PATH.
#
# Environment:
#   MPIEXEC          launcher and its flags (default: mpiexec), e.g. "mpiexec --oversubscribe"
#   OMP_NUM_THREADS  BLAS threads per rank (default 1; OPENBLAS/MKL follow it unless set)
#   TIMEOUT          if set, the run is killed after this many seconds (coreutils timeout)
#   BIND             core | socket | none | auto (default: core when NP <= cores, else none)
#   OUT              output directory for the iris defaults (default: out)
#   ELASTIC          1: add --with-ft ulfm (Open MPI's mpirun only): a rank's death does not end
#                    the run (docs/reliability.md, "Elastic training")
set -euo pipefail

usage() { echo "usage: $0 NP [mpinn train args...]" >&2; exit 2; }
[[ $# -ge 1 && "$1" =~ ^[1-9][0-9]*$ ]] || usage
np=$1
shift

# One BLAS thread per rank: NP ranks already occupy NP cores. Raise on purpose for hybrid runs.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-$OMP_NUM_THREADS}"
export MKL_NUM_THREADS="${MKL_NUM_THREADS:-$OMP_NUM_THREADS}"

mpinn=$(command -v mpinn) || { echo "$0: mpinn is not on PATH (activate the venv: . .venv/bin/activate)" >&2; exit 2; }
# MPIEXEC as shell words, quotes honoured: a launcher's path may hold spaces.
split_words() { local -n into=$1; mapfile -t into < <(printf '%s' "$2" | xargs -r printf '%s\n'); (( ${#into[@]} )) \
    || { echo "$0: cannot split $3 into words: $2" >&2; exit 2; }; }
split_words launcher "${MPIEXEC:-mpiexec}" MPIEXEC

# Pin each rank to a core so the OS does not migrate it away from its caches; never when
# oversubscribed (two pinned ranks could share one core while another idles).
bind=${BIND:-auto}
if [[ $bind == auto ]]; then
    cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)   # nproc obeys OMP_NUM_THREADS otherwise
    (( np <= cores )) && bind=core || bind=none
fi
bind_flags=()
if [[ $bind != none ]]; then
    case "$("${launcher[0]}" --version 2>&1 | head -n 3)" in
        *HYDRA*) bind_flags=(-bind-to "$bind") ;;                     # MPICH, Intel MPI
        *"Open MPI"*|*OpenRTE*|*prterun*) bind_flags=(--bind-to "$bind") ;;
        *) bind=none ;;                                               # unknown launcher: leave it alone
    esac
fi
if [[ "${ELASTIC:-0}" == 1 ]]; then
    case "$("${launcher[0]}" --version 2>&1 | head -n 3)" in
        *"Open MPI"*|*OpenRTE*|*prterun*) launcher+=(--with-ft ulfm) ;;
        *) echo "$0: ELASTIC=1 needs Open MPI's mpirun (MPIEXEC=mpirun); ${launcher[0]} is not" >&2; exit 2 ;;
    esac
fi
echo "local.sh: $np ranks, binding $bind, $OMP_NUM_THREADS BLAS thread(s) per rank"

if [[ $# -eq 0 ]]; then
    out=${OUT:-out}
    mkdir -p "$out"
    "$mpinn" data iris "$out/iris.h5"
    set -- --data "$out/iris.h5" --test-fraction 0.2 --seed 42 --hidden 10 --solver sgd \
           --epochs 1000 --log-every 100 --checkpoint "$out/iris-checkpoints"
fi

if [[ -n "${TIMEOUT:-}" ]]; then
    exec timeout "$TIMEOUT" "${launcher[@]}" "${bind_flags[@]}" -n "$np" "$mpinn" train "$@"
fi
exec "${launcher[@]}" "${bind_flags[@]}" -n "$np" "$mpinn" train "$@"
