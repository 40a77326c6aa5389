#!/usr/bin/env bash
# The STOMP chat: Orbited with its built-in broker, and a Python publisher
# pushing server-side events.  Open http://localhost:8000/demos/chat/
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
STOMP_PORT=${STOMP_PORT:-61613}
EVERY=${EVERY:-5}

port_free "$STOMP_PORT" STOMP_PORT   # RabbitMQ's STOMP plugin takes 61613 too
start_orbited "
[listen]
http://127.0.0.1:$HTTP_PORT
stomp://127.0.0.1:$STOMP_PORT

[static]
demos = $EXAMPLES

[access]
* -> localhost:$STOMP_PORT
"
wait_port "$STOMP_PORT"
"$PYTHON" "$EXAMPLES/chat/publisher.py" --port "$STOMP_PORT" --every "$EVERY" &
PIDS+=($!)
serve "chat/?stomp=$STOMP_PORT"
