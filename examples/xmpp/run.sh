#!/usr/bin/env bash
# An XMPP web chat: a local prosody with users alice/alicepw and bob/bobpw and a
# conference.localhost MUC, and Orbited letting pages reach it.
# Open http://localhost:8000/demos/xmpp/
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
XMPP_PORT=${XMPP_PORT:-5222}
need prosody "Install it: apt-get install prosody."
port_free "$XMPP_PORT" XMPP_PORT

P="$WORK/prosody"
mkdir -p "$P/data"
cat > "$P/prosody.cfg.lua" <<CONF
pidfile = "$P/data/prosody.pid"
data_path = "$P/data"
interfaces = { "127.0.0.1" }
c2s_ports = { $XMPP_PORT }
c2s_direct_tls_ports = {}
s2s_ports = {}
http_ports = {}
https_ports = {}
component_ports = {}
modules_enabled = { "roster", "saslauth", "disco", "ping", "posix", "presence" }
modules_disabled = { "s2s", "tls" }
-- Plain TCP between Orbited and prosody on loopback; put TLS in front of Orbited.
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
log = { { levels = { min = "info" }, to = "file", filename = "$P/data/prosody.log" } }
VirtualHost "localhost"
Component "conference.localhost" "muc"
CONF

RUN=()
if [ "$(id -u)" = 0 ]; then
  # prosody refuses to run as root: run it as its own account
  chown -R prosody:prosody "$P/data"
  RUN=(setpriv --reuid=prosody --regid=prosody --init-groups)
fi
prosodyctl --config "$P/prosody.cfg.lua" register alice localhost alicepw >/dev/null 2>&1
prosodyctl --config "$P/prosody.cfg.lua" register bob localhost bobpw >/dev/null 2>&1
"${RUN[@]}" prosody --config "$P/prosody.cfg.lua" -F > "$P/out.log" 2>&1 &
PIDS+=($!)
wait_port "$XMPP_PORT"

start_orbited "
[listen]
http://127.0.0.1:$HTTP_PORT

[static]
demos = $EXAMPLES

[access]
* -> localhost:$XMPP_PORT
"
serve "xmpp/?port=$XMPP_PORT"
