// The WebSocket load client of the benchmarks: one Node process, the same for
// Orbited and for every peer it is measured against.
//
// It shares two cores with the servers it measures, so it is as cheap per
// connection and per message as we could make it: plain `net` sockets, a
// precomputed upgrade request (one fixed Sec-WebSocket-Key, whose expected
// accept value is computed once), hand-rolled frames with a zero masking key
// (legal on the wire; the servers still run their unmasking code, the client
// skips a no-op XOR), one preallocated frame per echo message, a streaming
// frame reader that never copies payloads, and a fixed-size latency histogram.
// It speaks RFC 6455 as far as the servers need: binary and text frames in
// both directions, fragmentation and pings from the server, close handshake.
// It only connects where it is told (127.0.0.1), and every mode stops on its
// own (cfg.timeout).
//
// usage: node wsload.js '<json config>'; results are JSON lines on stdout.  Connect bursts
// have their own C client (wsconnect.c): this one costs 0.5 ms of CPU per connect.
// config: {mode, url, target, ...}; `target` is the TCPSocket handshake
// ("host:port", answered by the text message "1") or null for a tunnel that
// starts relaying at once (websockify).
//   echo:    {n, size, warmup, duration, concurrency}
//                                    n sessions each do send/wait-for-echo in a loop;
//                                    "measure-start"/"measure-end" mark the window.
//   hold:    {steps: [k, ...], concurrency}
//                                    open idle sessions up to each k (each checked with
//                                    one echo), print "step", wait for a line on stdin.
//   bulk:    {direction: "up"|"down", bytes, chunk}
//                                    one session through the bulk backend (backends.js).
'use strict';

const crypto = require('crypto');
const net = require('net');
const readline = require('readline');

const cfg = JSON.parse(process.argv[2]);
const MIB = 1 << 20;
const url = new URL(cfg.url);
const HOST = url.hostname;
const PORT = Number(url.port);
const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const ACCEPT = crypto.createHash('sha1').update(KEY + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
const UPGRADE = Buffer.from(
  `GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n`, 'latin1');
const CLOSE_FRAME = Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);  // 1000, zero mask
const HEAD_END = Buffer.from('\r\n\r\n');

const now = () => performance.now();
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

if (cfg.timeout) {
  setTimeout(() => { emit({ event: 'error', error: `client timeout after ${cfg.timeout}s` }); process.exit(2); },
    cfg.timeout * 1000).unref();
}

// A client frame (FIN, zero mask) around `payload`; opcode 1 text, 2 binary, 10 pong.
function frame(opcode, payload) {
  const n = payload.length;
  let head;
  if (n < 126) {
    head = Buffer.from([0x80 | opcode, 0x80 | n, 0, 0, 0, 0]);
  } else if (n < 65536) {
    head = Buffer.from([0x80 | opcode, 0x80 | 126, n >> 8, n & 255, 0, 0, 0, 0]);
  } else {
    head = Buffer.alloc(14);
    head[0] = 0x80 | opcode;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

// One WebSocket over one TCP socket.  `onData(buf, start, end)` receives
// payload bytes of data frames as they arrive (a frame may come in pieces).
class Session {
  constructor() {
    this.sock = null;
    this.closed = false;
    this.onData = null;
    this.onClose = null;
    this.head = null;      // unparsed bytes: the HTTP response, or an incomplete frame header
    this.upgraded = false;
    this.remaining = 0;    // payload bytes left in the current frame
    this.op = 0;           // opcode of the frame being read (a continuation gets its message's)
    this.msgOp = 0;        // opcode of the data message being read
    this.ctrl = null;      // payload pieces of a control frame
  }

  // Resolves once the session can carry data (after the TCPSocket handshake
  // when there is one) and, with `probe`, after the probe's echo came back.
  open(probe) {
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (why) => {
        if (settled) return;
        settled = true;
        this.sock.destroy();
        reject(new Error(String(why)));
      };
      const done = () => { settled = true; this.onData = null; resolve(this); };
      let got = 0;
      const ready = () => {
        if (!probe) { done(); return; }
        this.onData = (buf, a, b) => { got += b - a; if (got >= PROBE_SIZE) done(); };
        this.sock.write(probe);
      };
      this.onOpen = () => {
        if (!cfg.target) { ready(); return; }
        this.onData = (buf, a, b) => {
          if (this.op !== 1 || b - a !== 1 || buf[a] !== 0x31) {
            fail(`handshake answer ${JSON.stringify(buf.toString('latin1', a, b))}`);
            return;
          }
          ready();
        };
        this.sock.write(frame(1, Buffer.from(cfg.target, 'latin1')));
      };
      this.onClose = (why) => fail(why);
      const sock = this.sock = net.connect({ host: HOST, port: PORT, noDelay: true });
      sock.on('connect', () => sock.write(UPGRADE));
      sock.on('data', (data) => this.received(data, fail));
      sock.on('error', (err) => { this.closed = true; if (this.onClose) this.onClose(err.code || err.message); });
      sock.on('close', () => { this.closed = true; if (this.onClose) this.onClose('closed'); });
    });
  }

  received(data, fail) {
    if (!this.upgraded) {
      const buf = this.head ? Buffer.concat([this.head, data]) : data;
      const end = buf.indexOf(HEAD_END);
      if (end < 0) { this.head = buf; return; }
      const head = buf.toString('latin1', 0, end);
      this.head = null;
      if (!head.startsWith('HTTP/1.1 101') || !head.includes(ACCEPT)) {
        fail(`upgrade refused: ${head.split('\r\n')[0]}`);
        return;
      }
      this.upgraded = true;
      this.onOpen();
      if (end + 4 === buf.length) return;
      data = buf.subarray(end + 4);
    }
    this.frames(data);
  }

  frames(data) {
    if (this.head) { data = Buffer.concat([this.head, data]); this.head = null; }
    const n = data.length;
    let pos = 0;
    while (pos < n) {
      if (this.remaining > 0) {
        const end = Math.min(n, pos + this.remaining);
        if (this.op >= 8) this.ctrl.push(data.subarray(pos, end));
        else if (this.onData) this.onData(data, pos, end);
        this.remaining -= end - pos;
        pos = end;
        if (this.remaining === 0 && this.op >= 8) this.control();
        continue;
      }
      if (n - pos < 2) break;
      const b0 = data[pos];
      const b1 = data[pos + 1];
      let len = b1 & 0x7f;
      let hdr = 2;
      if (len === 126) {
        if (n - pos < 4) break;
        len = data.readUInt16BE(pos + 2);
        hdr = 4;
      } else if (len === 127) {
        if (n - pos < 10) break;
        len = Number(data.readBigUInt64BE(pos + 2));
        hdr = 10;
      }
      if (b1 & 0x80) hdr += 4;  // servers never mask; count the bytes anyway
      if (n - pos < hdr) break;
      pos += hdr;
      const op = b0 & 0x0f;
      this.remaining = len;
      if (op >= 8) {
        this.op = op;
        this.ctrl = [];
        if (len === 0) this.control();
      } else {
        if (op !== 0) this.msgOp = op;
        this.op = this.msgOp;
      }
    }
    if (pos < n) this.head = data.subarray(pos);
  }

  control() {
    const payload = Buffer.concat(this.ctrl);
    this.ctrl = null;
    if (this.op === 9) {
      this.sock.write(frame(10, payload));
    } else if (this.op === 8 && !this.closing) {
      this.closing = true;
      this.sock.end(CLOSE_FRAME);
    }
  }

  // Close handshake from our side; resolves when the socket is gone (or after `ms`).
  close(ms) {
    return new Promise((resolve) => {
      if (this.closed) { resolve(); return; }
      const timer = setTimeout(() => { this.sock.destroy(); resolve(); }, ms);
      this.onClose = () => { clearTimeout(timer); resolve(); };
      this.onData = null;
      if (!this.closing) {
        this.closing = true;
        this.sock.write(CLOSE_FRAME);
      }
    });
  }
}

const PROBE_SIZE = 1;
function probeFrame() { return frame(2, Buffer.alloc(PROBE_SIZE, 0x70)); }

async function openMany(count, concurrency, sessions, failures) {
  let started = 0;
  const probe = probeFrame();
  const worker = async () => {
    while (started < count) {
      started += 1;
      try {
        sessions.push(await new Session().open(probe));
      } catch (err) {
        failures[err.message] = (failures[err.message] || 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, worker));
}

async function closeAll(sessions, ms = 10000) {
  for (const s of sessions) if (!s.closed) s.onClose = null;
  await Promise.all(sessions.map((s) => s.close(ms)));
}

// Round-trip times in 10 µs buckets up to 2 s: fixed memory, O(1) per sample.
class Histogram {
  constructor() { this.counts = new Uint32Array(200001); this.total = 0; }
  record(ms) {
    this.counts[Math.min(200000, Math.floor(ms * 100))] += 1;
    this.total += 1;
  }
  percentile(p) {
    if (!this.total) return null;
    const rank = Math.ceil((p / 100) * this.total);
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= rank) return (i + 0.5) / 100;
    }
    return null;
  }
}

const lines = () => readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function modeEcho() {
  const failures = {};
  const sessions = [];
  const t0 = now();
  await openMany(cfg.n, cfg.concurrency || 100, sessions, failures);
  emit({ event: 'open', sessions: sessions.length, failures, seconds: (now() - t0) / 1000 });
  const size = cfg.size || 32;
  const message = frame(2, Buffer.alloc(size, 0x78));
  let hist = new Histogram();
  let running = true;
  let errors = 0;
  const perSession = new Uint32Array(sessions.length);
  sessions.forEach((s, index) => {
    let got = 0;
    let sentAt = 0;
    s.onClose = () => { if (running) errors += 1; };
    s.onData = (buf, a, b) => {
      got += b - a;
      if (got < size) return;
      got -= size;
      const t = now();
      hist.record(t - sentAt);
      perSession[index] += 1;
      if (!running) return;
      sentAt = t;
      s.sock.write(message);
    };
    sentAt = now();
    s.sock.write(message);
  });
  await sleep(cfg.warmup * 1000);
  hist = new Histogram();
  perSession.fill(0);
  const start = now();
  emit({ event: 'measure-start' });
  await sleep(cfg.duration * 1000);
  const seconds = (now() - start) / 1000;
  const window = hist;
  const counts = Array.from(perSession);
  emit({
    event: 'measure-end',
    seconds,
    roundTrips: window.total,
    p50: window.percentile(50),
    p99: window.percentile(99),
    p999: window.percentile(99.9),
    perSessionMin: Math.min(...counts),
    perSessionMax: Math.max(...counts),
    errors,
  });
  running = false;
  await sleep(200);
  await closeAll(sessions);
}

async function modeHold() {
  const failures = {};
  const sessions = [];
  const input = lines();
  for (const step of cfg.steps) {
    const t0 = now();
    await openMany(step - sessions.length, cfg.concurrency || 100, sessions, failures);
    const alive = sessions.filter((s) => !s.closed).length;
    emit({ event: 'step', target: step, open: alive, failures, seconds: (now() - t0) / 1000 });
    const line = await input.next();
    if (line.done || line.value.trim() === 'close') break;
  }
  const t0 = now();
  await closeAll(sessions, 30000);
  emit({ event: 'closed', seconds: (now() - t0) / 1000 });
}

async function modeBulk() {
  const session = await new Session().open(null);
  const sock = session.sock;
  const total = cfg.bytes;
  const header = Buffer.alloc(9);
  header.write(cfg.direction === 'up' ? 'U' : 'D', 0, 'latin1');
  header.writeBigUInt64BE(BigInt(total), 1);
  const result = await new Promise((resolve, reject) => {
    session.onClose = (why) => reject(new Error(`${why} during the transfer`));
    const start = now();
    let received = 0;
    if (cfg.direction === 'up') {
      const chunk = frame(2, Buffer.alloc(cfg.chunk || 65536, 0x62));
      const payload = cfg.chunk || 65536;
      const wantAcks = Math.floor(total / MIB);
      let sent = 0;
      const pump = () => {
        while (sent < total) {
          const n = Math.min(payload, total - sent);
          sent += n;
          const more = sock.write(n === payload ? chunk : frame(2, Buffer.alloc(n, 0x62)));
          if (!more) { sock.once('drain', pump); return; }
        }
      };
      session.onData = (buf, a, b) => {
        received += b - a;
        if (received >= wantAcks) resolve({ seconds: (now() - start) / 1000 });
      };
      sock.write(frame(2, header));
      pump();
    } else {
      session.onData = (buf, a, b) => {
        received += b - a;
        if (received >= total) resolve({ seconds: (now() - start) / 1000 });
      };
      sock.write(frame(2, header));
    }
  });
  emit({ event: 'bulk', direction: cfg.direction, bytes: total, seconds: result.seconds,
    mbPerSecond: total / 1e6 / result.seconds });
  session.onClose = null;
  await closeAll([session]);
}

const modes = { echo: modeEcho, hold: modeHold, bulk: modeBulk };
modes[cfg.mode]().then(() => process.exit(0), (err) => {
  emit({ event: 'error', error: String((err && err.stack) || err) });
  process.exit(1);
});
