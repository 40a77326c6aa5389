#!/usr/bin/env bash
# An IRC web client: a local ngircd, and Orbited letting pages reach it.
# Open http://localhost:8000/demos/irc/
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
IRC_PORT=${IRC_PORT:-6667}
need ngircd "Install it: apt-get install ngircd (or point the page at another IRC server you may use)."
port_free "$IRC_PORT" IRC_PORT

cat > "$WORK/ngircd.conf" <<CONF
[Global]
Name = irc.orbited.test
Info = Orbited demo IRC server
Listen = 127.0.0.1
Ports = $IRC_PORT
PidFile = $WORK/ngircd.pid
$( [ "$(id -u)" = 0 ] && printf 'ServerUID = 65534\nServerGID = 65534\n' )
[Limits]
MaxConnectionsIP = 0
[Options]
PAM = no
Ident = no
DNS = no
CONF
ngircd -n -f "$WORK/ngircd.conf" > "$WORK/ngircd.log" 2>&1 &
PIDS+=($!)
wait_port "$IRC_PORT"

start_orbited "
[listen]
http://127.0.0.1:$HTTP_PORT

[static]
demos = $EXAMPLES

[access]
* -> localhost:$IRC_PORT
"
serve "irc/?port=$IRC_PORT"
