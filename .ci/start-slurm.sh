#!/usr/bin/env bash
# A one-node SLURM on this machine, for the tests marked needs("slurm") (tests/test_jobqueue.py).
#
# Installs Debian's slurm-wlm and munge (and chromium, for the browser tests), writes
# /etc/slurm/slurm.conf for ONE node on localhost with 2 CPUs, starts munged, slurmctld and
# slurmd without systemd, and waits until `sinfo` shows the node idle. Runs as root.
# Idempotent: packages already installed are not reinstalled, a daemon already running is
# left alone, and the config is rewritten only when it would change.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
NODE="$(hostname -s)"
# A bit below the machine's memory: slurmd drains a node that reports less than RealMemory.
MEM_MB="$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"

log() { echo "start-slurm: [${SECONDS}s] $*" >&2; }

if ((EUID != 0)); then
    log "must run as root (it installs packages and starts daemons); CI machines run as root"
    exit 1
fi

install_packages() {
    local pkg missing=()
    # chromium (and a font it renders text with) is for the browser tests, not SLURM.
    for pkg in slurm-wlm munge chromium fonts-liberation; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        log "packages already installed"
        return
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    log "installed"
}

start_munge() {
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating the munge key"
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running"
        return
    fi
    runuser -u munge -- /usr/sbin/munged
    munge -n </dev/null | unmunge >/dev/null
}

write_config() {
    install -d -m 0755 "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
    local conf
    # proctrack/linuxproc and task/none: no cgroups, which containers and CI VMs often lack.
    # config_overrides: use CPUs=2 as written even where the machine has another count.
    # CR_CPU: two 1-CPU jobs share the node, so a test can run two worker jobs at once.
    conf="$(
        cat <<EOF
# Written by .ci/start-slurm.sh: one node on localhost, for tests only.
ClusterName=rankdist-ci
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=2 RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
    )"
    if [[ -f "$CONF_DIR/slurm.conf" ]] && [[ "$(cat "$CONF_DIR/slurm.conf")" == "$conf" ]]; then
        return
    fi
    log "writing $CONF_DIR/slurm.conf (node $NODE, 2 CPUs, ${MEM_MB} MB)"
    printf '%s\n' "$conf" >"$CONF_DIR/slurm.conf"
    if pgrep -x slurmctld >/dev/null; then
        scontrol reconfigure
    fi
}

start_daemon() {
    local name="$1"
    if pgrep -x "$name" >/dev/null; then
        log "$name already running"
        return
    fi
    log "starting $name"
    "/usr/sbin/$name"
}

wait_for_idle_node() {
    local state i
    for i in $(seq 1 60); do
        state="$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null || true)"
        case "$state" in
            idle* | mixed* | allocated*)
                log "node $NODE is $state (after ${i} s)"
                return
                ;;
            down* | drain*)
                # Left down by an earlier run of the daemons: bring it back.
                scontrol update nodename="$NODE" state=resume 2>/dev/null || true
                ;;
        esac
        sleep 1
    done
    log "node $NODE did not become idle within 60 s (state: '${state}')"
    sinfo -N -l >&2 || true
    tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
    exit 1
}

install_packages
start_munge
write_config
start_daemon slurmctld
start_daemon slurmd
wait_for_idle_node
