/* stomp.js: a STOMP 1.0-1.2 client over an Orbited TCPSocket.
 *
 *   var stomp = new STOMPClient();
 *   stomp.onconnectedframe = function (frame) { stomp.subscribe("/topic/chat"); };
 *   stomp.onmessageframe = function (frame) { show(frame.body); };
 *   stomp.connect("localhost", 61613, "guest", "guest");
 *
 * Orbited 0.7's API (connect, disconnect, send, subscribe, unsubscribe,
 * begin, commit, abort, ack, sendFrame/send_frame, reset, and the on*frame
 * callbacks), speaking STOMP 1.2 when the broker does: ack and nack work,
 * receipts, heart-beats, transactions.  Frames are parsed from bytes, by
 * content-length when present, so bodies may hold NULs and any bytes.
 * docs/client.md is the reference.  Needs Orbited.js.
 */
(function (root) {
    "use strict";

    var LF = 10, CR = 13, NUL = 0, COLON = 58;
    var encoder = new TextEncoder();
    var decoder = new TextDecoder("utf-8");

    function concat(a, b) {
        if (!a.length) {
            return b;
        }
        var out = new Uint8Array(a.length + b.length);
        out.set(a, 0);
        out.set(b, a.length);
        return out;
    }

    // STOMP 1.1+ header escaping (CONNECT and CONNECTED frames are never escaped).
    function escapeHeader(value) {
        return String(value).replace(/\\/g, "\\\\").replace(/\r/g, "\\r").replace(/\n/g, "\\n")
            .replace(/:/g, "\\c");
    }

    function unescapeHeader(value) {
        return value.replace(/\\(.)/g, function (all, c) {
            return c === "n" ? "\n" : c === "r" ? "\r" : c === "c" ? ":" : c === "\\" ? "\\" : all;
        });
    }

    // Bytes in, frames out.  onFrame({type, headers, body, binaryBody}), onHeartbeat().
    function StompParser(onFrame, onHeartbeat, maxFrameSize) {
        this.onFrame = onFrame;
        this.onHeartbeat = onHeartbeat || function () {};
        this.maxFrameSize = maxFrameSize || 16 * 1024 * 1024;
        this.buffer = new Uint8Array(0);
        this.escaping = true;  // set false for a STOMP 1.0 connection
    }
    StompParser.prototype.push = function (data) {
        this.buffer = concat(this.buffer, data);
        var buf = this.buffer, pos = 0;
        for (;;) {
            // end-of-lines between frames are heart-beats
            while (pos < buf.length && (buf[pos] === LF || buf[pos] === CR)) {
                if (buf[pos] === LF) {
                    this.onHeartbeat();
                }
                pos++;
            }
            if (pos >= buf.length) {
                break;
            }
            var headEnd = -1, bodyStart = -1;
            for (var i = pos; i < buf.length; i++) {
                if (buf[i] === LF) {
                    if (buf[i + 1] === LF) {
                        headEnd = i;
                        bodyStart = i + 2;
                        break;
                    }
                    if (buf[i + 1] === CR && buf[i + 2] === LF) {
                        headEnd = i;
                        bodyStart = i + 3;
                        break;
                    }
                }
            }
            if (headEnd < 0) {
                if (buf.length - pos > this.maxFrameSize) {
                    throw new Error("STOMP frame headers longer than " + this.maxFrameSize + " bytes");
                }
                break;
            }
            var lines = decoder.decode(buf.subarray(pos, headEnd)).split("\n");
            var type = lines[0].replace(/\r$/, "");
            var raw = type === "CONNECTED" || type === "CONNECT" || !this.escaping;
            var headers = {};
            for (var l = 1; l < lines.length; l++) {
                var line = lines[l].replace(/\r$/, "");
                var colon = line.indexOf(":");
                if (colon < 0) {
                    continue;
                }
                var name = line.slice(0, colon), value = line.slice(colon + 1);
                if (!raw) {
                    name = unescapeHeader(name);
                    value = unescapeHeader(value);
                }
                if (!Object.prototype.hasOwnProperty.call(headers, name)) {
                    headers[name] = value;  // the first of repeated headers wins (1.2)
                }
            }
            var bodyEnd;
            if (Object.prototype.hasOwnProperty.call(headers, "content-length")) {
                var length = parseInt(headers["content-length"], 10);
                if (isNaN(length) || length < 0 || length > this.maxFrameSize) {
                    throw new Error("bad STOMP content-length " + headers["content-length"]);
                }
                if (bodyStart + length >= buf.length) {
                    break;  // wait for the whole body and its NUL
                }
                bodyEnd = bodyStart + length;
                if (buf[bodyEnd] !== NUL) {
                    throw new Error("STOMP frame body not followed by NUL");
                }
            } else {
                bodyEnd = buf.indexOf(NUL, bodyStart);
                if (bodyEnd < 0) {
                    if (buf.length - pos > this.maxFrameSize) {
                        throw new Error("STOMP frame longer than " + this.maxFrameSize + " bytes");
                    }
                    break;
                }
            }
            var binaryBody = buf.slice(bodyStart, bodyEnd);
            pos = bodyEnd + 1;
            this.onFrame({type: type, command: type, headers: headers,
                          body: decoder.decode(binaryBody), binaryBody: binaryBody});
        }
        this.buffer = pos >= buf.length ? new Uint8Array(0) : buf.slice(pos);
    };

    // Frame bytes for type, headers and body (a string or bytes).  escape: 1.1+ header escaping.
    function serializeFrame(type, headers, body, escape) {
        var head = [type];
        var bodyBytes = null;
        headers = headers || {};
        if (body !== undefined && body !== null && body !== "") {
            bodyBytes = typeof body === "string" ? encoder.encode(body) :
                body instanceof Uint8Array ? body : new Uint8Array(body.buffer || body, body.byteOffset || 0,
                                                                   body.byteLength);
            if (headers["content-length"] === undefined) {
                head.push("content-length:" + bodyBytes.length);
            }
            if (headers["content-type"] === undefined && typeof body === "string") {
                head.push("content-type:text/plain;charset=utf-8");
            }
        }
        var noEscape = !escape || type === "CONNECT" || type === "STOMP";
        for (var key in headers) {
            if (!Object.prototype.hasOwnProperty.call(headers, key) || headers[key] === undefined ||
                headers[key] === null) {
                continue;
            }
            var value = String(headers[key]);
            if (noEscape) {
                if (/[\r\n]/.test(key + value) || key.indexOf(":") >= 0) {
                    throw new Error("STOMP header " + key + " may not contain a newline or (in its name) a colon");
                }
                head.push(key + ":" + value);
            } else {
                head.push(escapeHeader(key) + ":" + escapeHeader(value));
            }
        }
        var headBytes = encoder.encode(head.join("\n") + "\n\n");
        var out = new Uint8Array(headBytes.length + (bodyBytes ? bodyBytes.length : 0) + 1);
        out.set(headBytes, 0);
        if (bodyBytes) {
            out.set(bodyBytes, headBytes.length);
        }
        out[out.length - 1] = NUL;
        return out;
    }

    function merge(dst, src) {
        for (var k in src || {}) {
            if (Object.prototype.hasOwnProperty.call(src, k)) {
                dst[k] = src[k];
            }
        }
        return dst;
    }

    function Ignored() {}

    function STOMPClient() {
        var self = this;
        var socket = null;
        var parser = null;
        var counter = 0;
        var subscriptions = {};   // id -> {destination, ack}
        var pendingAcks = {};     // ack id or message-id -> MESSAGE headers, for client-ack subscriptions
        var receiptWatchers = {};
        var pinger = null, ponger = null;
        var lastSent = 0, lastReceived = 0;

        self.user = null;           // deprecated (0.7)
        self.version = null;        // negotiated STOMP version once connected
        self.connected = false;
        self.vhost = "/";           // the CONNECT host header; null to leave it out
        self.connectHeaders = {};   // more CONNECT headers
        self.heartbeat = {outgoing: 10000, incoming: 10000};  // ms; 0 turns a direction off
        self.maxFrameSize = 16 * 1024 * 1024;

        self.onopen = Ignored;
        self.onclose = Ignored;
        self.onerror = Ignored;
        self.onconnectedframe = Ignored;
        self.onreceiptframe = Ignored;
        self.onerrorframe = Ignored;
        self.onmessage = Ignored;   // deprecated (0.7): called when onmessageframe is not replaced
        self.onmessageframe = function (frame) {
            if (this.onmessage) {
                this.onmessage(frame);
            }
        };

        self.onframe = function (frame) {
            switch (frame.type) {
                case "CONNECTED":
                    self.onconnectedframe(frame);
                    break;
                case "MESSAGE":
                    self.onmessageframe(frame);
                    break;
                case "RECEIPT":
                    self.onreceiptframe(frame);
                    break;
                case "ERROR":
                    self.onerrorframe(frame);
                    break;
                default:
                    self.onerror("Unknown STOMP frame type " + frame.type);
            }
        };

        function nextId(prefix) {
            counter += 1;
            return prefix + "-" + counter;
        }

        function stopHeartbeats() {
            root.clearInterval(pinger);
            root.clearInterval(ponger);
            pinger = ponger = null;
        }

        function startHeartbeats(frame) {
            var server = (frame.headers["heart-beat"] || "0,0").split(",");
            var sx = parseInt(server[0], 10) || 0, sy = parseInt(server[1], 10) || 0;
            var cx = self.heartbeat.outgoing || 0, cy = self.heartbeat.incoming || 0;
            if (self.version === "1.0") {
                return;
            }
            if (cx && sy) {
                var every = Math.max(cx, sy);
                pinger = root.setInterval(function () {
                    if (socket && Date.now() - lastSent >= every / 2) {
                        write(new Uint8Array([LF]));
                    }
                }, every / 2);
            }
            if (cy && sx) {
                var expect = Math.max(cy, sx);
                ponger = root.setInterval(function () {
                    if (Date.now() - lastReceived > expect * 2) {
                        fail(Orbited.Errors.ConnectionTimeout, "no heart-beat from the broker for " +
                             (Date.now() - lastReceived) + " ms");
                    }
                }, expect);
            }
        }

        // The socket is let go before the page hears why, so that no handler can keep it open.
        function fail(code, why) {
            var s = socket;
            socket = null;
            forgetSession();
            if (s) {
                s.onclose = function () {};
                s.close();
            }
            call("onerror", [why]);
            if (s) {
                call("onclose", [code]);
            }
        }

        // A page callback that throws is reported on its own, as TCPSocket reports one.
        function call(name, args) {
            var fn = self[name];
            if (typeof fn === "function") {
                try {
                    fn.apply(self, args || []);
                } catch (e) {
                    root.setTimeout(function () { throw e; }, 0);
                }
            }
        }

        function write(data) {
            if (!socket) {
                throw new Error("STOMPClient is not connected");
            }
            lastSent = Date.now();
            socket.send(data);
        }

        // A page callback that throws is the page's bug, not a STOMP protocol error: it is
        // reported the way TCPSocket reports one (thrown again on its own, to the page's error
        // handler) and the connection goes on with the next frame.
        function pageCall(fn, frame) {
            try {
                fn.call(self, frame);
            } catch (e) {
                root.setTimeout(function () { throw e; }, 0);
            }
        }

        function onFrame(frame) {
            if (frame.type === "CONNECTED") {
                self.version = frame.headers.version || "1.0";
                self.connected = true;
                parser.escaping = self.version !== "1.0";
                startHeartbeats(frame);
            } else if (frame.type === "MESSAGE") {
                var sub = subscriptions[frame.headers.subscription];
                if (sub && sub.ack !== "auto") {
                    pendingAcks[frame.headers.ack || frame.headers["message-id"]] = frame.headers;
                }
            } else if (frame.type === "RECEIPT") {
                var id = frame.headers["receipt-id"];
                var watcher = receiptWatchers[id];
                if (watcher) {
                    delete receiptWatchers[id];
                    pageCall(watcher, frame);
                    if (id.indexOf("disconnect-") === 0) {
                        return;  // our own DISCONNECT receipt: not the page's business
                    }
                }
            } else if (frame.type === "ERROR") {
                self.connected = false;
            }
            pageCall(self.onframe, frame);
        }

        // Orbited 0.7's hook for tests; returns the socket the client will use.
        self._createTransport = function () {
            var Socket = self.transport || root.TCPSocket || root.Orbited.TCPSocket;
            return new Socket();
        };
        self._createProtocol = self._createTransport;

        // What one connection's broker session knew dies with it: a client connected again
        // (after a lost connection, as a page does) must not unsubscribe, ack or wait for
        // receipts of the old session (the broker answers an unknown subscription with ERROR).
        function forgetSession() {
            stopHeartbeats();
            self.connected = false;
            subscriptions = {};
            pendingAcks = {};
            receiptWatchers = {};
        }

        self.connect = function (host, port, login, passcode) {
            self.user = login;
            if (socket) {
                // still open (or waiting for its DISCONNECT receipt): it ends here, its onclose
                // follows, and its close is never taken for the new connection's
                socket.close();
            }
            forgetSession();
            self.version = null;  // kept after a close for the page to read; a new session negotiates anew
            var s = socket = self._createTransport();
            socket.binaryType = "arraybuffer";
            parser = new StompParser(function (frame) {
                onFrame(frame);
            }, null, self.maxFrameSize);
            socket.onopen = function () {
                var headers = merge({"accept-version": "1.0,1.1,1.2"}, {});
                var hb = self.heartbeat || {};
                headers["heart-beat"] = (hb.outgoing || 0) + "," + (hb.incoming || 0);
                if (self.vhost) {
                    headers.host = self.vhost;
                }
                if (login !== undefined && login !== null) {
                    headers.login = login;
                }
                if (passcode !== undefined && passcode !== null) {
                    headers.passcode = passcode;
                }
                merge(headers, self.connectHeaders);
                lastReceived = Date.now();
                self.sendFrame("CONNECT", headers);
                call("onopen");
            };
            socket.onread = function (data) {
                lastReceived = Date.now();
                try {
                    parser.push(new Uint8Array(data));
                } catch (e) {
                    fail(Orbited.Errors.UserConnectionReset, "STOMP protocol error: " + e.message);
                }
            };
            socket.onclose = function (code) {
                if (socket === s) {
                    socket = null;
                    forgetSession();
                }
                call("onclose", [code]);
            };
            socket.open(host, port, true);
        };

        self.sendFrame = function (type, headers, body) {
            write(serializeFrame(type, headers, body, self.version !== "1.0"));
        };
        self.send_frame = self.sendFrame;  // deprecated (0.7)

        // Ask for a receipt: fn(frame) runs when the broker confirms the frame with this id.
        self.watchForReceipt = function (receiptId, fn) {
            receiptWatchers[receiptId] = fn;
        };

        self.disconnect = function (extraHeaders) {
            if (!socket) {
                return;
            }
            if (typeof socket.READY_STATE_OPEN === "number" && socket.readyState !== socket.READY_STATE_OPEN) {
                // not open yet (or closing): there is no session to end, only the socket
                stopHeartbeats();
                self.connected = false;
                socket.close();
                return;
            }
            var receipt = nextId("disconnect");
            var s = socket;
            var closeSoon = root.setTimeout(function () { s.close(); }, 2000);
            self.watchForReceipt(receipt, function () {
                root.clearTimeout(closeSoon);
                s.close();
            });
            self.sendFrame("DISCONNECT", merge({receipt: receipt}, extraHeaders));
            self.connected = false;
            stopHeartbeats();
        };

        self.reset = function () {
            stopHeartbeats();
            if (socket) {
                socket.reset();
            }
        };

        self.send = function (message, destination, extraHeaders) {
            self.sendFrame("SEND", merge({destination: destination}, extraHeaders), message);
        };

        // Returns the subscription id (generated unless extraHeaders has one).
        self.subscribe = function (destination, extraHeaders) {
            var headers = merge({destination: destination}, extraHeaders);
            if (!headers.id) {
                headers.id = nextId("sub");
            }
            if (!headers.ack) {
                headers.ack = "auto";
            }
            subscriptions[headers.id] = {destination: destination, ack: headers.ack};
            self.sendFrame("SUBSCRIBE", headers);
            return headers.id;
        };

        // Unsubscribe by subscription id, or (0.7 style) by destination: every subscription to it.
        self.unsubscribe = function (destinationOrId, extraHeaders) {
            var ids = [];
            if (extraHeaders && extraHeaders.id) {
                ids.push(extraHeaders.id);
            } else if (subscriptions[destinationOrId]) {
                ids.push(destinationOrId);
            } else {
                for (var id in subscriptions) {
                    if (subscriptions[id].destination === destinationOrId) {
                        ids.push(id);
                    }
                }
            }
            if (!ids.length) {
                self.sendFrame("UNSUBSCRIBE", merge({destination: destinationOrId}, extraHeaders));
                return;
            }
            for (var i = 0; i < ids.length; i++) {
                var sub = subscriptions[ids[i]];
                var headers = merge({id: ids[i]}, extraHeaders);
                if (self.version === "1.0" && sub) {
                    headers.destination = sub.destination;
                }
                delete subscriptions[ids[i]];
                self.sendFrame("UNSUBSCRIBE", headers);
            }
        };

        function ackHeaders(message, transaction, extraHeaders) {
            var known = typeof message === "object" && message ? message.headers : pendingAcks[message];
            var headers = {};
            if (self.version === "1.2") {
                headers.id = known ? (known.ack || known["message-id"]) : message;
            } else {
                headers["message-id"] = known ? known["message-id"] : message;
                if (self.version === "1.1" && known) {
                    headers.subscription = known.subscription;
                }
            }
            if (known) {
                delete pendingAcks[known.ack || known["message-id"]];
            }
            if (transaction) {
                headers.transaction = transaction;
            }
            return merge(headers, extraHeaders);
        }

        // ack(frame or id[, transaction[, extraHeaders]]): for subscriptions with ack client(-individual).
        self.ack = function (message, transaction, extraHeaders) {
            self.sendFrame("ACK", ackHeaders(message, transaction, extraHeaders));
        };

        self.nack = function (message, transaction, extraHeaders) {
            if (self.version === "1.0") {
                throw new Error("NACK needs STOMP 1.1 or later; the broker speaks 1.0");
            }
            self.sendFrame("NACK", ackHeaders(message, transaction, extraHeaders));
        };

        // Transactions: begin() returns the id (generated unless given).
        self.begin = function (id) {
            id = id || nextId("tx");
            self.sendFrame("BEGIN", {transaction: id});
            return id;
        };
        self.commit = function (id) {
            self.sendFrame("COMMIT", {transaction: id});
        };
        self.abort = function (id) {
            self.sendFrame("ABORT", {transaction: id});
        };
    }

    STOMPClient.Parser = StompParser;
    STOMPClient.serializeFrame = serializeFrame;
    root.STOMPClient = STOMPClient;
})(typeof window !== "undefined" ? window : this);
