#!/usr/bin/env bash
# The Rails flow without Rails: Orbited with its built-in broker, the page the
# plugin's view helpers render, and Ruby's stomp gem publishing with
# Orbited.send_data.  Open http://localhost:8000/demos/rails/
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
STOMP_PORT=${STOMP_PORT:-61613}
EVERY=${EVERY:-5}
need ruby "Install Ruby and its stomp gem: apt-get install ruby-stomp (or gem install stomp)."

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
# Stands in for the Rails app: a "tick" through Orbited.send_data every EVERY seconds.
ruby "$EXAMPLES/rails/publish.rb" --port "$STOMP_PORT" --every "$EVERY" hello tick &
PIDS+=($!)
serve "rails/?stomp=$STOMP_PORT"
