// The measurement floor of the /ws connect burst: a server that does as little as a
// tunnel's client can tell apart from a real one, so that its figure is what the
// machine, the kernel and the load client cost on their own.
//
// It answers any upgrade request with a fixed 101 (the accept value of the fixed key
// that bench/client/wsconnect.c sends), answers every text message with "1" (a
// TCPSocket handshake accepted), and echoes binary messages itself: no backend, no
// TCP connect, no header parsing.  It is not a WebSocket server; only wsconnect talks
// to it, and it drops a connection that sends anything it does not expect.
//
// usage: node answer_at_once.js PORT   (listens on 127.0.0.1:PORT)
'use strict';
const net = require('net');

const UPGRADED = Buffer.from('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n' +
  'Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n' +
  'Sec-WebSocket-Protocol: binary\r\n\r\n');
const ONE = Buffer.from([0x81, 1, 0x31]);

function serve(socket) {
  let buffer = Buffer.alloc(0);
  let upgraded = false;
  socket.on('error', () => {});
  socket.on('data', (data) => {
    buffer = buffer.length ? Buffer.concat([buffer, data]) : data;
    if (!upgraded) {
      const end = buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      upgraded = true;
      buffer = buffer.subarray(end + 4);
      socket.write(UPGRADED);
    }
    // Masked client frames with payloads under 126 bytes: all wsconnect sends.
    while (buffer.length >= 6) {
      const opcode = buffer[0] & 0x0f;
      const length = buffer[1] & 0x7f;
      if (!(buffer[1] & 0x80) || length > 125) { socket.destroy(); return; }
      if (buffer.length < 6 + length) return;
      const mask = buffer.subarray(2, 6);
      const payload = Buffer.from(buffer.subarray(6, 6 + length));
      for (let i = 0; i < length; i++) payload[i] ^= mask[i & 3];
      buffer = buffer.subarray(6 + length);
      if (opcode === 1) {
        socket.write(ONE);
      } else if (opcode === 2) {
        socket.write(Buffer.concat([Buffer.from([0x82, length]), payload]));
      } else {
        socket.destroy();
        return;
      }
    }
  });
}

const server = net.createServer({noDelay: true}, serve);
server.listen({port: Number(process.argv[2]), host: '127.0.0.1', backlog: 4096});
process.on('SIGTERM', () => process.exit(0));
