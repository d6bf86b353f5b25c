#!/usr/bin/env bash
# Stops what start.sh (and the tests, through their pid files) started under STATE_DIR:
# every *.pid there, by its own id, TERM first, then KILL. Removes etcd's tmpfs data.
set -uo pipefail
dir="${1:?usage: stop.sh STATE_DIR}"
[ -d "$dir" ] || exit 0
pids=()
for f in "$dir"/*.pid; do
  [ -e "$f" ] || continue
  pid="$(cat "$f")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && { kill -TERM "$pid" 2>/dev/null; pids+=("$pid"); }
  rm -f "$f"
done
for _ in $(seq 1 50); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.2
done
for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null; done
if [ -f "$dir/etcd-data-dir" ]; then
  d="$(cat "$dir/etcd-data-dir")"
  case "$d" in /dev/shm/gsched-e2e-etcd.*) rm -rf "$d" ;; esac
  rm -f "$dir/etcd-data-dir"
fi
exit 0
