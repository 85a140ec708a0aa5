#!/usr/bin/env bash
# A one-machine stand-in for a cluster, for the cluster tests and for trying the Slurm recipe:
#   munge and a one-node Slurm (slurmctld + slurmd, with slurmdbd on MariaDB for accounting, so
#   sacct answers and job states are exact), a PostgreSQL server on 127.0.0.1, and
#   `mlflow server` on 127.0.0.1 with PostgreSQL as its backend store and proxied artifacts.
# Installs what is missing with apt-get (as root), starts what is not running, and writes
# $CLUSTER_DIR/env.sh, which points Slurm's commands and MLflow at them:
#   cluster/up.sh && . /tmp/autograd-cluster/env.sh
# Idempotent: a second call starts nothing. cluster/down.sh stops what this started, by PID.
set -euo pipefail

CLUSTER_DIR=${CLUSTER_DIR:-/tmp/autograd-cluster}
PG_PORT=${PG_PORT:-55432}
MLFLOW_PORT=${MLFLOW_PORT:-55000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MLFLOW=${MLFLOW:-$ROOT/.venv/bin/mlflow}
LOGS=$CLUSTER_DIR/logs
started_ns=$(date +%s%N)

alive() { [[ -f $1 ]] && kill -0 "$(head -n1 "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "cluster/up.sh: $what did not come up within $seconds s; see $LOGS" >&2
    exit 1
}

[[ $(id -u) == 0 ]] || { echo "cluster/up.sh: run as root (it installs packages and starts daemons)" >&2; exit 1; }
[[ -x $MLFLOW ]] || { echo "cluster/up.sh: $MLFLOW not found; run make setup first" >&2; exit 1; }
mkdir -p "$LOGS" "$CLUSTER_DIR/slurm/state" "$CLUSTER_DIR/slurm/spool" "$CLUSTER_DIR/artifacts"

# --- packages -------------------------------------------------------------------------------
missing=()
for package in slurmctld slurmd slurmdbd slurm-client munge mariadb-server postgresql; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$LOGS/apt.log" 2>&1 \
        || { echo "cluster/up.sh: apt-get install failed; see $LOGS/apt.log" >&2; exit 1; }
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)

# --- munge: Slurm's authentication ----------------------------------------------------------
[[ -f /etc/munge/munge.key ]] || mungekey -c
if ! pgrep -x munged >/dev/null; then
    install -d -o munge -g munge -m 0755 /run/munge /var/log/munge
    runuser -u munge -- munged
    cp /run/munge/munged.pid "$CLUSTER_DIR/munged.pid"  # so that down.sh stops only a munged started here
fi

# --- MariaDB, for slurmdbd: Slurm's accounting, which sacct (and so submitit) reads job states from ---
DB_DATA=$CLUSTER_DIR/mariadb
if [[ ! -d $DB_DATA/mysql ]]; then
    install -d -o mysql -g mysql "$DB_DATA"
    mariadb-install-db --user=mysql --datadir="$DB_DATA" >"$LOGS/mariadb-install.log" 2>&1
fi
if ! alive "$DB_DATA/mariadb.pid"; then
    touch "$LOGS/mariadb.log" && chown mysql "$LOGS/mariadb.log"
    setsid mariadbd --user=mysql --datadir="$DB_DATA" --socket="$DB_DATA/mariadb.sock" --bind-address=127.0.0.1 \
        --port=53306 --pid-file="$DB_DATA/mariadb.pid" --log-error="$LOGS/mariadb.log" >/dev/null 2>&1 &
    wait_for 60 "MariaDB" mariadb --socket="$DB_DATA/mariadb.sock" -e "SELECT 1"
fi
mariadb --socket="$DB_DATA/mariadb.sock" -e \
    "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"

# --- Slurm: one node with this machine's CPUs and memory, and its accounting daemon ----------------
host=$(hostname -s)
cat >"$CLUSTER_DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$host
DbdPort=56819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=53306
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$CLUSTER_DIR/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
EOF
chmod 600 "$CLUSTER_DIR/slurmdbd.conf"
read -r cpus memory < <(slurmd -C | awk -F'[ =]' '/^NodeName/ {for (i=1; i<NF; i++) {if ($i=="CPUs") c=$(i+1); if ($i=="RealMemory") m=$(i+1)}; print c, m}')
cat >"$CLUSTER_DIR/slurm.conf" <<EOF
ClusterName=autograd
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$host
AccountingStoragePort=56819
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
StateSaveLocation=$CLUSTER_DIR/slurm/state
SlurmdSpoolDir=$CLUSTER_DIR/slurm/spool
SlurmctldPidFile=$CLUSTER_DIR/slurmctld.pid
SlurmdPidFile=$CLUSTER_DIR/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldPort=56817
SlurmdPort=56818
KillWait=10
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$CLUSTER_DIR/slurm.conf  # slurmdbd reads slurmdbd.conf from the same folder
if ! alive "$CLUSTER_DIR/slurmdbd.pid"; then
    slurmdbd
    wait_for 60 "slurmdbd" sacctmgr -n list cluster
fi
alive "$CLUSTER_DIR/slurmctld.pid" || slurmctld
alive "$CLUSTER_DIR/slurmd.pid" || slurmd
wait_for 60 "Slurm (sinfo: node up)" bash -c "sinfo -h -o %t | grep -Eqx 'idle|mix|alloc|comp'"
wait_for 60 "Slurm accounting (sacct)" sacct -n -X

# --- PostgreSQL on 127.0.0.1, trusting local connections (a test server, not a production one) ---
PG_DATA=$CLUSTER_DIR/postgres
if [[ ! -f $PG_DATA/PG_VERSION ]]; then
    install -d -o postgres -g postgres -m 0700 "$PG_DATA"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust >"$LOGS/initdb.log" 2>&1
fi
if ! runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    touch "$LOGS/postgres.log" && chown postgres "$LOGS/postgres.log"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$LOGS/postgres.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DATA" start >/dev/null
fi
psql_as_postgres() { runuser -u postgres -- "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAq "$@"; }
[[ $(psql_as_postgres -c "SELECT 1 FROM pg_database WHERE datname = 'mlflow'") == 1 ]] \
    || psql_as_postgres -c "CREATE DATABASE mlflow"
STORE=postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/mlflow

# --- mlflow server: PostgreSQL store, artifacts proxied to a local folder -----------------------
if ! alive "$CLUSTER_DIR/mlflow.pid"; then
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true} setsid "$MLFLOW" server \
        --backend-store-uri "$STORE" --artifacts-destination "$CLUSTER_DIR/artifacts" \
        --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 2 >"$LOGS/mlflow.log" 2>&1 &
    echo $! >"$CLUSTER_DIR/mlflow.pid"
fi
wait_for 180 "mlflow server (http://127.0.0.1:$MLFLOW_PORT/health)" curl -sf "http://127.0.0.1:$MLFLOW_PORT/health"

cat >"$CLUSTER_DIR/env.sh" <<EOF
export SLURM_CONF=$SLURM_CONF
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
# the server's own store, which tests/test_cluster.py also reads directly
export CLUSTER_STORE_URI=$STORE
EOF
elapsed_ms=$((($(date +%s%N) - started_ns) / 1000000))
printf 'cluster up in %d.%d s: Slurm partition debug (%s CPUs, %s MB), PostgreSQL 127.0.0.1:%s, mlflow server http://127.0.0.1:%s\n' \
    $((elapsed_ms / 1000)) $((elapsed_ms % 1000 / 100)) "$cpus" "$memory" "$PG_PORT" "$MLFLOW_PORT"
echo "  environment: . $CLUSTER_DIR/env.sh      logs: $LOGS/      stop: cluster/down.sh"
