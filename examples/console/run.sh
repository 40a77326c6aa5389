#!/usr/bin/env bash
# A line console: Orbited with its echo, lineecho and announce test servers.
# Open http://localhost:8000/demos/console/
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
ECHO_PORT=${ECHO_PORT:-8001}
LINEECHO_PORT=${LINEECHO_PORT:-8002}
ANNOUNCE_PORT=${ANNOUNCE_PORT:-8004}

start_orbited "
[listen]
http://127.0.0.1:$HTTP_PORT
echo://127.0.0.1:$ECHO_PORT
lineecho://127.0.0.1:$LINEECHO_PORT
announce://127.0.0.1:$ANNOUNCE_PORT

[static]
demos = $EXAMPLES

[access]
* -> localhost:$ECHO_PORT
* -> localhost:$LINEECHO_PORT
* -> localhost:$ANNOUNCE_PORT
"
serve "console/?port=$LINEECHO_PORT"
