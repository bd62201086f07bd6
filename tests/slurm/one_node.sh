#!/usr/bin/env bash
# A one-node Slurm on this machine, for tests: munge + slurmctld + slurmd from Debian's
# slurm-wlm, with a generated slurm.conf (MpiDefault=none, as Slurm ships it).
#
#   tests/slurm/one_node.sh install   apt-get install slurm-wlm munge (root; exit 3 if impossible)
#   tests/slurm/one_node.sh start     write the configuration, start the daemons, wait for an idle node
#   tests/slurm/one_node.sh stop      stop the daemons
#
# Everything lives under SLURM_STATE (default /tmp/mpinn-slurm); clients find the cluster with
# SLURM_CONF=$SLURM_STATE/slurm.conf (printed by start). The node advertises CPUS (default 8)
# CPUs whatever the machine has, so several small test jobs run at once (oversubscribed).
set -euo pipefail

state=${SLURM_STATE:-/tmp/mpinn-slurm}
conf=$state/slurm.conf
cpus=${CPUS:-8}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "one_node.sh: Slurm is not installed and cannot be (needs root and apt-get)" >&2
        exit 3
    fi
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >"$state.apt.log" 2>&1 \
        || { echo "one_node.sh: apt-get install slurm-wlm munge failed (see $state.apt.log)" >&2; exit 3; }
}

write_conf() {
    local host
    host=$(hostname -s)
    mkdir -p "$state/spool" "$state/ctld" "$state/log"
    cat >"$conf" <<EOF
ClusterName=mpinn-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
# The time-limit check and the --signal delivery run every few seconds, not every minute.
MessageTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    install
    write_conf
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    [[ -s /etc/munge/munge.key ]] || { mungekey --create --force >/dev/null 2>&1 || \
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    if ! pgrep -x munged >/dev/null; then
        runuser -u munge -- /usr/sbin/munged
    fi
    stop_daemons
    slurmctld -f "$conf"
    slurmd -f "$conf"
    export SLURM_CONF=$conf
    for _ in $(seq 120); do
        if [[ $(sinfo -h -o %T 2>/dev/null) == idle* ]]; then
            echo "one_node.sh: Slurm is up: SLURM_CONF=$conf ($cpus CPUs on $(hostname -s))"
            return 0
        fi
        sleep 0.5
    done
    echo "one_node.sh: the node did not become idle in 60 s; logs in $state/log" >&2
    sinfo -N -l >&2 || true
    exit 1
}

stop_daemons() {
    for name in slurmd slurmctld; do
        if [[ -s "$state/$name.pid" ]]; then
            kill "$(cat "$state/$name.pid")" 2>/dev/null || true
        fi
    done
    for _ in $(seq 40); do
        pgrep -f "slurm(ctld|d) -f $conf" >/dev/null || return 0
        sleep 0.25
    done
    pkill -9 -f "slurm(ctld|d) -f $conf" || true
}

case ${1:-} in
    install) mkdir -p "$(dirname "$state")"; install ;;
    start) start ;;
    stop) stop_daemons; echo "one_node.sh: Slurm stopped" ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
