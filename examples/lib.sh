# Shared by the examples' run.sh scripts: find Orbited, start and stop processes.
# Each run.sh sources this, starts what its demo needs, then waits; Ctrl-C
# (or SIGTERM) stops everything it started.

EXAMPLES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$EXAMPLES")
HTTP_PORT=${HTTP_PORT:-8000}

# The orbited command and a Python with stomp.py: the repo's venv (`make install`), else PATH.
if [ -x "$REPO/venv/bin/orbited" ]; then
  ORBITED=${ORBITED:-$REPO/venv/bin/orbited}
  PYTHON=${PYTHON:-$REPO/venv/bin/python}
else
  ORBITED=${ORBITED:-orbited}
  PYTHON=${PYTHON:-python3}
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/orbited-demo.XXXXXX")
chmod 755 "$WORK"
PIDS=()

cleanup() {
  trap - EXIT INT TERM
  [ -z "${SLEEPER:-}" ] || kill "$SLEEPER" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# need PROGRAM HINT: fail early with a useful message
need() {
  command -v "$1" >/dev/null 2>&1 || { echo "$(basename "$0"): '$1' not found. $2" >&2; exit 1; }
}
need "$ORBITED" "Run 'make install' once (it creates venv/ with Orbited), or set ORBITED to the orbited command."

# port_free PORT VARIABLE: fail early when something listens there already (the ngircd or
# prosody a distribution starts on install, `make run`, another demo): else wait_port would
# find that one, and the demo's own server would stop at once, its log deleted with $WORK.
port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "$(basename "$0"): 127.0.0.1:$1 is in use already (a system service, make run, or another demo?);" \
         "stop that, or set $2 to a free port" >&2
    exit 1
  fi
}

# wait_port PORT: until something listens on 127.0.0.1:PORT (20 s)
wait_port() {
  for _ in $(seq 400); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$(basename "$0"): nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# start_orbited CONFIG_BODY: [global] user is added for root; /demos/ serves examples/.
start_orbited() {
  {
    echo "[global]"
    echo "user = $(id -un)"
    echo "$1"
  } > "$WORK/orbited.cfg"
  port_free "$HTTP_PORT" HTTP_PORT
  "$ORBITED" --config "$WORK/orbited.cfg" &
  PIDS+=($!)
  wait_port "$HTTP_PORT"
}

# After everything is up: say where to look, then wait until interrupted
# (or until any of the processes exits: then everything stops, saying which and why).
serve() {
  echo
  echo "Open http://localhost:$HTTP_PORT/demos/$1   (Ctrl-C stops the demo)"
  # Poll rather than `wait -n`, which misses a process that ended before it was called (a
  # server dying during start-up); `wait` on a sleep lets Ctrl-C and SIGTERM in at once.
  local pid gone="" status=0
  while [ -z "$gone" ]; do
    for pid in "${PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || { gone=$pid; break; }
    done
    [ -n "$gone" ] || { sleep 0.5 & SLEEPER=$!; wait "$SLEEPER"; }
  done
  wait "$gone" || status=$?
  # Only a process that ended by itself gets here (Ctrl-C exits through the trap): say so, and
  # show the logs of the servers started here before cleanup deletes them with $WORK.
  echo "$(basename "$0"): a process of the demo exited (status $status); stopping the demo." >&2
  find "$WORK" -name '*.log' -size +0 2>/dev/null | while read -r log; do
    echo "--- ${log#"$WORK"/} (last lines)" >&2
    tail -n 5 "$log" >&2
  done
  return "$status"
}
