#!/usr/bin/env bash
# A single-node SLURM on this machine, for tests/test_slurm.py and for trying profiles/slurm locally.
# Debian 12 (slurm-wlm 22.05, munge, slurmdbd + MariaDB), no systemd needed; run as root; idempotent.
#
#   scripts/slurm/setup.sh      # installs the packages (apt) if missing, starts the daemons
#   scripts/slurm/teardown.sh   # stops only the daemons this script started
#
# SLURM_ACCOUNTING=dbd (default): slurmdbd + MariaDB, so `sacct` answers (the SLURM plugin's default
#   status command; without accounting it waits forever for sacct).
# SLURM_ACCOUNTING=none: no accounting; run snakemake with --slurm-status-command squeue.
# An account $SLURM_TEST_ACCOUNT (default: diffunlearn) is created and root is associated with it, so
# the plugin's account check (sacctmgr) passes: set slurm_account to it (SBATCH_ACCOUNT=diffunlearn).
# Daemons started here are recorded in $STATE_DIR/<name>.pid for teardown.sh.
# Exit status: 0 ready, 2 the packages are missing and apt-get could not install them, 1 other errors.
set -euo pipefail
STATE_DIR=${STATE_DIR:-${TMPDIR:-/tmp}/diffunlearn-slurm}
ACCTMODE=${SLURM_ACCOUNTING:-dbd}; CLUSTER=${CLUSTER:-localcluster}
ACCOUNT=${SLURM_TEST_ACCOUNT:-diffunlearn}
PARTITION=${PARTITION:-debug}; DB_PASS=${DB_PASS:-slurmdbpass}; NODE=$(hostname -s)
log() { echo "[slurm-setup $(date +%T)] $*"; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
command -v apt-get >/dev/null || command -v slurmctld >/dev/null || { log "ERROR: no apt-get and no SLURM"; exit 2; }
mkdir -p "$STATE_DIR"
pidof_file() { [ -f "$1" ] && echo "$(tr -dc 0-9 < "$1")" || true; }
alive() { local p; p=$(pidof_file "$1"); [ -n "$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = "$2" ]; }
wait_for() { local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do [ $SECONDS -lt $end ] || return 1; sleep 0.3; done; }
start() { # start NAME PIDFILE CMD... : start daemon unless running, record its pid
  local name=$1 pf=$2; shift 2
  alive "$pf" "$name" && return 0
  "$@"
  wait_for 15 alive "$pf" "$name" || die "$name did not start (see /var/log/slurm, /var/log/munge)"
  pidof_file "$pf" > "$STATE_DIR/$name.pid"; log "started $name (pid $(pidof_file "$pf"))"; }

# --- packages
PKGS=(munge slurmctld slurmd slurm-client)
if [ "$ACCTMODE" = dbd ]; then PKGS+=(slurmdbd mariadb-server); fi
missing=(); for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  # a clean machine may have empty package lists: update once and retry
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; }
  { apt_install || { apt-get update && apt_install; }; } > "$STATE_DIR/apt.log" 2>&1 \
    || { tail -20 "$STATE_DIR/apt.log"; log "ERROR: apt-get failed"; exit 2; }   # 2: no packages
fi
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >> /etc/hosts

# --- munge
mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key \
  || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key; chmod 755 /run/munge
start munged /run/munge/munged.pid runuser -u munge -- /usr/sbin/munged
wait_for 10 sh -c 'munge -n | unmunge' || die "munge not working"

# --- slurm.conf (hardware from slurmd -C, RealMemory = 90 % of real)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
chown slurm:slurm /var/spool/slurmctld /var/log/slurm
HW=$(slurmd -C | head -1)
hw() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$HW"; }
if [ "$ACCTMODE" = dbd ]; then
  ACCT=$'JobAcctGatherType=jobacct_gather/linux\nAccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost'
else
  ACCT=$'JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none'
fi
CONF="ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
MinJobAge=300
KillWait=5
$ACCT
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$(hw CPUs) Boards=$(hw Boards) SocketsPerBoard=$(hw SocketsPerBoard) CoresPerSocket=$(hw CoresPerSocket) ThreadsPerCore=$(hw ThreadsPerCore) RealMemory=$(( $(hw RealMemory) * 90 / 100 )) State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
CHANGED=0
if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$CONF" ]; then
  echo "$CONF" > /etc/slurm/slurm.conf; CHANGED=1; log "wrote /etc/slurm/slurm.conf"; fi

# --- MariaDB + slurmdbd
if [ "$ACCTMODE" = dbd ]; then
  mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql > "$STATE_DIR/mariadb-init.log" 2>&1
  if ! mariadb-admin ping >/dev/null 2>&1; then
    start mariadbd /run/mysqld/mysqld.pid sh -c 'setsid /usr/sbin/mariadbd --user=mysql \
      --pid-file=/run/mysqld/mysqld.pid > /var/log/slurm/mariadb.log 2>&1 < /dev/null &'
    wait_for 60 mariadb-admin ping || die "MariaDB did not come up"
  fi
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  printf '%s\n' AuthType=auth/munge DbdHost=localhost DbdPort=6819 SlurmUser=slurm \
    LogFile=/var/log/slurm/slurmdbd.log PidFile=/run/slurmdbd.pid \
    StorageType=accounting_storage/mysql StorageHost=localhost StorageUser=slurm \
    "StoragePass=$DB_PASS" StorageLoc=slurm_acct_db > /etc/slurm/slurmdbd.conf
  chown slurm:slurm /etc/slurm/slurmdbd.conf; chmod 600 /etc/slurm/slurmdbd.conf
  start slurmdbd /run/slurmdbd.pid slurmdbd
  wait_for 60 sacctmgr -n show cluster || die "slurmdbd not answering"
  sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" \
    || { sacctmgr -i add cluster "$CLUSTER" >/dev/null; log "registered cluster $CLUSTER"; }
fi

# --- slurmctld + slurmd (restart our own ones if slurm.conf changed)
for d in slurmd slurmctld; do
  if [ $CHANGED = 1 ] && alive /run/$d.pid $d; then
    p=$(pidof_file /run/$d.pid)
    if [ "$(pidof_file "$STATE_DIR/$d.pid")" = "$p" ]; then
      log "config changed: restarting $d"; kill "$p"; wait_for 20 sh -c "! [ -d /proc/$p ]"
    else log "WARNING: $d was not started by this script and keeps its old config"; fi
  fi
done
start slurmctld /run/slurmctld.pid slurmctld
start slurmd /run/slurmd.pid slurmd

# --- wait until the node is idle
end=$((SECONDS + 90))
while :; do
  st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1 || true)
  case "$st" in idle|mixed|allocated) break ;;
    *drain*|down*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;; esac
  [ $SECONDS -lt $end ] || die "node $NODE not idle (state '$st'), see /var/log/slurm/"
  sleep 0.5
done
# --- an account for the submitting user (the plugin validates slurm_account with sacctmgr)
if [ "$ACCTMODE" = dbd ]; then
  USER_NAME=$(id -un)
  sacctmgr -n -P show account format=account | grep -qx "$ACCOUNT" \
    || { sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" >/dev/null; log "created account $ACCOUNT"; }
  sacctmgr -n -P show assoc user="$USER_NAME" format=account | grep -qx "$ACCOUNT" \
    || { sacctmgr -i add user "$USER_NAME" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null; log "associated $USER_NAME with $ACCOUNT"; }
fi
log "ready: node $NODE $st, partition $PARTITION, accounting=$ACCTMODE, account $ACCOUNT"
