#!/usr/bin/env bash
# Stop what cluster/up.sh started, by the PIDs it recorded: mlflow server, PostgreSQL, Slurm
# (slurmd, slurmctld, slurmdbd and its MariaDB),
# and munged if up.sh started it. Idempotent: what is not running is skipped.
# The data stays in $CLUSTER_DIR (remove the folder to start from nothing).
set -uo pipefail

CLUSTER_DIR=${CLUSTER_DIR:-/tmp/autograd-cluster}

stop() {  # stop NAME PIDFILE [SIGNAL]: SIGNAL (TERM) to the process, or its group if it leads one; KILL after 30 s
    local name=$1 pidfile=$2 signal=${3:-TERM} pid
    [[ -f $pidfile ]] || return 0
    pid=$(head -n1 "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        if [[ $(ps -o pgid= -p "$pid" | tr -d ' ') == "$pid" ]]; then kill "-$signal" -- "-$pid"; else kill "-$signal" "$pid"; fi
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null
        echo "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
}

stop "mlflow server" "$CLUSTER_DIR/mlflow.pid"
# PostgreSQL's postmaster writes its PID on the first line of postmaster.pid; SIGINT is its fast shutdown.
stop PostgreSQL "$CLUSTER_DIR/postgres/postmaster.pid" INT
stop slurmd "$CLUSTER_DIR/slurmd.pid"
stop slurmctld "$CLUSTER_DIR/slurmctld.pid"
stop slurmdbd "$CLUSTER_DIR/slurmdbd.pid"
stop MariaDB "$CLUSTER_DIR/mariadb/mariadb.pid"
stop munged "$CLUSTER_DIR/munged.pid"
exit 0
