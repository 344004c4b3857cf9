#!/usr/bin/env bash
# Stop only the daemons that scripts/slurm/setup.sh started (pid files in $STATE_DIR); daemons that
# were running before setup.sh (a real cluster, another session's test SLURM) are left alone.
set -uo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE_DIR=${STATE_DIR:-${TMPDIR:-/tmp}/diffunlearn-slurm}
log() { printf '[slurm-teardown %s] %s\n' "$(date +%T)" "$*"; }

declare -A RUNPID=([slurmd]=/run/slurmd.pid [slurmctld]=/run/slurmctld.pid
  [slurmdbd]=/run/slurmdbd.pid [mariadbd]=/run/mysqld/mysqld.pid [munged]=/run/munge/munged.pid)
for name in slurmd slurmctld slurmdbd mariadbd munged; do   # reverse start order
  pf=$STATE_DIR/$name.pid
  [ -s "$pf" ] || continue
  pid=$(tr -dc '0-9' < "$pf")
  if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$name" ]; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do [ -d /proc/"$pid" ] || break; sleep 0.2; done
    if [ -d /proc/"$pid" ]; then
      log "$name (pid $pid) ignored SIGTERM for 20 s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
    log "stopped $name (pid $pid)"
  else
    log "$name (pid ${pid:-?}) not running (stale pid file)"
  fi
  # slurm daemons leave their /run pid file behind; a stale /run/slurmctld.pid
  # makes slurmctld's dpkg prerm run scancel and fail ("apt-get purge" breaks)
  rp=${RUNPID[$name]}
  [ -n "$pid" ] && [ -f "$rp" ] && [ "$(tr -dc 0-9 < "$rp")" = "$pid" ] && rm -f "$rp"
  rm -f "$pf"
done
