// TCP backends behind the tunnels under test: echo, and bulk (sink or source).
//
// One Node process, the same for Orbited and every peer, so a backend's cost
// never favours one server.  It binds 127.0.0.1 only, on ports the kernel
// picks, and prints them as one JSON line: {"echo": PORT, "bulk": PORT}.
// It must never buffer without bound: the source side waits for 'drain'.
//
// bulk protocol (our own, for the throughput scenario): the client's first 9
// bytes are a mode byte and a 64-bit big-endian length.
//   'U' + N: sink.  Reads N bytes and answers one byte per MiB received, so the
//            client knows when every byte crossed the tunnel.
//   'D' + N: source.  Sends N bytes, then keeps the connection open.
'use strict';

const net = require('net');

const MIB = 1 << 20;
const BACKLOG = 4096;

function echoServer() {
  return net.createServer({ noDelay: true }, (sock) => {
    sock.on('data', (data) => sock.write(data));
    sock.on('error', () => sock.destroy());
  });
}

function bulkServer() {
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  return net.createServer({ noDelay: true }, (sock) => {
    let header = Buffer.alloc(0);
    let mode = null;
    let remaining = 0n;
    let received = 0;
    let acked = 0;
    sock.on('error', () => sock.destroy());
    sock.on('data', (data) => {
      if (mode === null) {
        header = Buffer.concat([header, data]);
        if (header.length < 9) return;
        mode = String.fromCharCode(header[0]);
        remaining = header.readBigUInt64BE(1);
        data = header.subarray(9);
        if (mode === 'D') {
          source(sock, Number(remaining), chunk);
          return;
        }
        if (mode !== 'U') { sock.destroy(); return; }
      }
      if (mode === 'U') {
        received += data.length;
        const due = Math.floor(received / MIB) - acked;
        if (due > 0) { acked += due; sock.write(Buffer.alloc(due, 0x6b)); }
      }
    });
  });
}

function source(sock, total, chunk) {
  let left = total;
  const pump = () => {
    while (left > 0) {
      const n = Math.min(left, chunk.length);
      left -= n;
      if (!sock.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
        sock.once('drain', pump);
        return;
      }
    }
  };
  pump();
}

const ports = {};
const servers = { echo: echoServer(), bulk: bulkServer() };
let pending = Object.keys(servers).length;
for (const [name, server] of Object.entries(servers)) {
  server.maxConnections = 100000;
  server.listen({ host: '127.0.0.1', port: 0, backlog: BACKLOG }, () => {
    ports[name] = server.address().port;
    if (--pending === 0) process.stdout.write(JSON.stringify(ports) + '\n');
  });
}
process.on('SIGTERM', () => process.exit(0));
