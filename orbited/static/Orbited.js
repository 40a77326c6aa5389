/* Orbited.js: TCP sockets for web pages, through an Orbited server.
 *
 *   var socket = new Orbited.TCPSocket();
 *   socket.onopen = function () { socket.send("hello\n"); };
 *   socket.onread = function (data) { ... };
 *   socket.onclose = function (code) { ... };      // 103, 106, 108, 201, ...
 *   socket.open("localhost", 61613, false);        // host:port as Orbited's [access] names it
 *
 * The API is Orbited 0.7's, so 0.7 pages keep working.  Underneath, a socket
 * is a native WebSocket to /ws; when that cannot be opened (or when
 * Orbited.settings.transports says so) it rides the SockJS protocol at
 * /sockjs over xhr-streaming, eventsource, xhr-polling or jsonp-polling.
 * One file, no dependencies, no build step.  docs/client.md is the reference.
 *
 * Never: eval what the network sends, buffer without bound on the page's
 * behalf, or fire a callback after onclose.
 */
(function (root) {
    "use strict";

    var Orbited = root.Orbited = root.Orbited || {};
    Orbited.version = "1.0";

    // ------------------------------------------------------------------
    // settings: autodetected from the <script> that loaded this file

    function scriptLocation() {
        var script = root.document && root.document.currentScript;
        var src = script && script.src;
        if (!src && root.document) {
            var scripts = root.document.getElementsByTagName("script");
            for (var i = scripts.length - 1; i >= 0; i--) {
                if (/\/static\/Orbited\.js(\?.*)?$/.test(scripts[i].src || "")) {
                    src = scripts[i].src;
                    break;
                }
            }
        }
        try {
            return new URL(src || root.location.href, root.location.href);
        } catch (e) {
            return null;
        }
    }

    function detectSettings() {
        var where = scriptLocation();
        var protocol = where && /^https?:$/.test(where.protocol) ? where.protocol.slice(0, -1) : "http";
        var port = where && where.port ? parseInt(where.port, 10) : (protocol === "https" ? 443 : 80);
        return {
            hostname: where && where.hostname ? where.hostname : "localhost",
            port: port,
            protocol: protocol,
            transports: ["websocket", "xhr-streaming", "eventsource", "xhr-polling", "jsonp-polling"],
            streaming: true,
            wsPath: "/ws",
            sockjsPath: "/sockjs",
            connectTimeout: 10000,    // ms to open one transport before trying the next
            reconnectTimeout: 5000,   // ms a SockJS session may be unreachable before it counts as lost
            heartbeatTimeout: 65000,  // ms of silence on a SockJS session before it counts as lost
            log: false,
            // Orbited 0.7 settings that no longer do anything, kept so pages that set them still run.
            HEARTBEAT_TIMEOUT: 6000,
            POLL_INTERVAL: 2000,
            enableFFPrivileges: false
        };
    }

    var presets = Orbited.settings || {};
    Orbited.settings = detectSettings();
    for (var key in presets) {
        if (Object.prototype.hasOwnProperty.call(presets, key)) {
            Orbited.settings[key] = presets[key];
        }
    }

    function log() {
        if (Orbited.settings.log && root.console) {
            var args = Array.prototype.slice.call(arguments);
            args.unshift("[Orbited]");
            root.console.debug.apply(root.console, args);
        }
    }

    // ------------------------------------------------------------------
    // close codes (0.7's numbers)

    Orbited.Errors = {
        ConnectionTimeout: 101,        // lost contact with Orbited, or could not reach it at all
        InvalidHandshake: 102,
        UserConnectionReset: 103,      // the page called close() or reset()
        RemoteConnectionTimeout: 104,  // the backend did not answer the connect in time
        Unauthorized: 106,             // [access] or the Origin check refused this destination
        RemoteConnectionFailed: 108    // the backend refused the connection or is not there
    };
    Orbited.Statuses = {
        ServerClosedConnection: 201,   // the backend closed, or Orbited shut down cleanly
        SocketControlKilled: 301
    };
    Orbited.codeName = function (code) {
        var tables = [Orbited.Errors, Orbited.Statuses];
        for (var t = 0; t < tables.length; t++) {
            for (var name in tables[t]) {
                if (tables[t][name] === code) {
                    return name;
                }
            }
        }
        return "Unknown";
    };

    // ------------------------------------------------------------------
    // bytes: 0.7 pages pass "byte strings" (one char per byte); we also take
    // ArrayBuffers and typed arrays

    var bytes = Orbited.bytes = {
        fromByteString: function (text) {
            var out = new Uint8Array(text.length);
            for (var i = 0; i < text.length; i++) {
                var c = text.charCodeAt(i);
                if (c > 255) {
                    throw new TypeError("binary data must be a byte string (characters 0-255), " +
                                        "an ArrayBuffer or a typed array; found U+" + c.toString(16));
                }
                out[i] = c;
            }
            return out;
        },
        toByteString: function (data) {
            var parts = [];
            for (var i = 0; i < data.length; i += 8192) {
                parts.push(String.fromCharCode.apply(null, data.subarray(i, i + 8192)));
            }
            return parts.join("");
        },
        from: function (data) {
            if (data instanceof Uint8Array) {
                return data;
            }
            if (data instanceof ArrayBuffer) {
                return new Uint8Array(data);
            }
            if (ArrayBuffer.isView(data)) {
                return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
            }
            return bytes.fromByteString(String(data));
        },
        concat: function (a, b) {
            if (!a.length) {
                return b;
            }
            var out = new Uint8Array(a.length + b.length);
            out.set(a, 0);
            out.set(b, a.length);
            return out;
        }
    };

    Orbited.base64 = {
        // 0.7's API: byte string in, byte string out
        encode: function (data) {
            return root.btoa(typeof data === "string" ? data : bytes.toByteString(bytes.from(data)));
        },
        decode: function (text) {
            return root.atob(text);
        },
        encodeBytes: function (data) {
            return root.btoa(bytes.toByteString(data));
        },
        decodeBytes: function (text) {
            var raw = root.atob(text);
            var out = new Uint8Array(raw.length);
            for (var i = 0; i < raw.length; i++) {
                out[i] = raw.charCodeAt(i);
            }
            return out;
        }
    };

    // How many bytes at the end of `data` start a UTF-8 sequence that is not complete yet.
    function incompleteTail(data) {
        var n = data.length;
        for (var back = 1; back <= 3 && back <= n; back++) {
            var b = data[n - back];
            if ((b & 0xC0) === 0x80) {
                continue;  // continuation byte: keep looking for the lead byte
            }
            var need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
            return need > back ? back : 0;
        }
        return 0;
    }

    Orbited.utf8 = {
        // text -> byte string (0.7's API)
        encode: function (text) {
            return bytes.toByteString(new TextEncoder().encode(text));
        },
        // byte string -> [text, bytes consumed]; an incomplete sequence at the end is left unconsumed
        decode: function (data) {
            var raw = bytes.from(data);
            var end = raw.length - incompleteTail(raw);
            return [new TextDecoder("utf-8").decode(raw.subarray(0, end)), end];
        },
        encodeBytes: function (text) {
            return new TextEncoder().encode(text);
        },
        // A streaming decoder: characters split across reads come out whole.
        decoder: function () {
            var decoder = new TextDecoder("utf-8");
            return {
                decode: function (data) {
                    return decoder.decode(data, {stream: true});
                }
            };
        }
    };

    // ------------------------------------------------------------------
    // URLs

    function hostForUrl(host) {
        host = String(host);
        return host.indexOf(":") >= 0 && host.charAt(0) !== "[" ? "[" + host + "]" : host;
    }

    function baseUrl(websocket) {
        var s = Orbited.settings;
        var secure = String(s.protocol).replace(/:$/, "") === "https";
        var scheme = websocket ? (secure ? "wss" : "ws") : (secure ? "https" : "http");
        return scheme + "://" + hostForUrl(s.hostname) + ":" + s.port;
    }

    function isCrossOrigin(url) {
        try {
            return new URL(url, root.location.href).origin !== root.location.origin;
        } catch (e) {
            return true;
        }
    }

    function randomString(length) {
        var alphabet = "abcdefghijklmnopqrstuvwxyz012345";
        var values = new Uint8Array(length);
        root.crypto.getRandomValues(values);
        var out = "";
        for (var i = 0; i < length; i++) {
            out += alphabet.charAt(values[i] & 31);
        }
        return out;
    }

    // Outgoing data is cut into messages of at most this many bytes; a
    // SockJS POST carries at most POST_LIMIT characters of them.
    var CHUNK = 65536;
    var POST_LIMIT = 262144;

    function chunks(data) {
        var out = [];
        for (var i = 0; i < data.length; i += CHUNK) {
            out.push(data.subarray(i, i + CHUNK));
        }
        return out;
    }

    // ------------------------------------------------------------------
    // transports
    //
    // A transport carries messages between a TCPSocket and Orbited.  It
    // reports to `events`: established() once Orbited can hear it,
    // message(m) for each message (a string, or a Uint8Array on /ws), and
    // closed(info) once, with info = {established, code, reason, lost}.
    // It offers sendText(string) for the handshake, sendBytes(Uint8Array),
    // decode(message) -> Uint8Array, close() (at once: what is not sent yet
    // is dropped) and closeWhenSent() (what was given to sendBytes still goes
    // out first; no event is reported after it).

    var transports = Orbited.transports = {};

    // Orbited sends something at least every session.ping_interval once a transport is open (a
    // SockJS heartbeat, an empty binary message on /ws): silence for heartbeatTimeout means it,
    // or the way to it, is gone.  A transport keeps lastActivity and established.
    function silentTooLong(transport) {
        return transport.established && Date.now() - transport.lastActivity > Orbited.settings.heartbeatTimeout;
    }

    // Native WebSocket to /ws: the handshake is a text message, data are binary messages.
    function WebSocketTransport(events) {
        this.events = events;
        this.established = false;
        this.finished = false;
        this.ws = null;
        this.lastActivity = Date.now();
    }
    WebSocketTransport.supported = function () {
        return typeof root.WebSocket === "function";
    };
    WebSocketTransport.prototype.start = function () {
        var self = this;
        var ws = self.ws = new root.WebSocket(baseUrl(true) + Orbited.settings.wsPath, "binary");
        ws.binaryType = "arraybuffer";
        ws.onopen = function () {
            self.established = true;
            self.lastActivity = Date.now();
            self.watchdog = root.setInterval(function () { self.checkAlive(); }, 1000);
            self.events.established();
        };
        ws.onmessage = function (event) {
            self.lastActivity = Date.now();
            if (self.finished) {
                return;
            }
            if (typeof event.data === "string") {
                self.events.message(event.data);
            } else if (event.data.byteLength) {  // an empty one is Orbited's keepalive
                self.events.message(new Uint8Array(event.data));
            }
        };
        ws.onclose = function (event) {
            self.finish({code: event.code, reason: event.reason, lost: !event.wasClean && event.code === 1006});
        };
        ws.onerror = function () {};  // a close event follows
    };
    WebSocketTransport.prototype.checkAlive = function () {
        if (silentTooLong(this)) {
            this.finish({reason: "no keepalive within heartbeatTimeout", lost: true});
            this.close();  // a dead path may never deliver the close event
        }
    };
    WebSocketTransport.prototype.finish = function (info) {
        if (this.finished) {
            return;
        }
        root.clearInterval(this.watchdog);
        this.finished = true;
        info.established = this.established;
        this.events.closed(info);
    };
    WebSocketTransport.prototype.sendText = function (text) {
        this.ws.send(text);
    };
    WebSocketTransport.prototype.sendBytes = function (data) {
        var parts = chunks(data);
        for (var i = 0; i < parts.length; i++) {
            this.ws.send(parts[i]);
        }
    };
    WebSocketTransport.prototype.decode = function (message) {
        return typeof message === "string" ? Orbited.utf8.encodeBytes(message) : message;
    };
    WebSocketTransport.prototype.close = function () {
        this.finished = true;
        root.clearInterval(this.watchdog);
        var ws = this.ws;
        if (ws) {
            ws.onopen = ws.onmessage = ws.onclose = null;
            try {
                ws.close(1000);
            } catch (e) {
                // already closing
            }
        }
    };
    // A WebSocket sends what it buffered before its close frame.
    WebSocketTransport.prototype.closeWhenSent = WebSocketTransport.prototype.close;
    transports.websocket = WebSocketTransport;

    // --- SockJS (protocol 0.3.3) at /sockjs
    //
    // Server frames: o (open), h (heartbeat), a[...] (messages), c[code,"reason"] (close).
    // After the TCPSocket handshake every message both ways is the base64 of the bytes.

    var SockJSFrames = Orbited.SockJSFrames = {
        // One frame -> {type, messages?, code?, reason?}; null for an unknown frame.
        parse: function (frame) {
            var type = frame.charAt(0);
            if (type === "o" || type === "h") {
                return {type: type};
            }
            if (type === "a") {
                return {type: "a", messages: JSON.parse(frame.slice(1))};
            }
            if (type === "m") {
                return {type: "a", messages: [JSON.parse(frame.slice(1))]};
            }
            if (type === "c") {
                var close = JSON.parse(frame.slice(1));
                return {type: "c", code: close[0], reason: close[1]};
            }
            return null;
        },
        // Complete '\n'-terminated frames out of a growing stream of text.
        LineReader: function () {
            var pending = "";
            this.feed = function (text) {
                pending += text;
                var lines = pending.split("\n");
                pending = lines.pop();
                return lines.filter(function (line) { return line.length > 0; });
            };
            this.rest = function () {
                var rest = pending;
                pending = "";
                return rest;
            };
        }
    };

    function SockJSTransport(events) {
        this.events = events;
        this.established = false;
        this.finished = false;
        this.queue = [];
        this.sending = false;
        this.closing = false;      // the page closed: end the session once the queue is sent
        this.request = null;       // the receiving request in flight
        this.sendRequest = null;
        this.failingSince = null;
        this.retryDelay = 100;
        this.timers = [];
        this.lastActivity = Date.now();
    }
    SockJSTransport.supported = function () {
        return typeof root.XMLHttpRequest === "function";
    };
    SockJSTransport.prototype.start = function () {
        var self = this;
        self.url = baseUrl(false) + Orbited.settings.sockjsPath + "/" +
            Math.floor(Math.random() * 1000) + "/" + randomString(16);
        self.crossOrigin = isCrossOrigin(self.url);
        self.watchdog = root.setInterval(function () { self.checkAlive(); }, 1000);
        self.receive();
    };
    SockJSTransport.prototype.later = function (fn, delay) {
        var self = this;
        var timer = root.setTimeout(function () {
            self.timers.splice(self.timers.indexOf(timer), 1);
            if (!self.finished) {
                fn();
            }
        }, delay);
        self.timers.push(timer);
    };
    SockJSTransport.prototype.checkAlive = function () {
        if (!this.established && Date.now() - this.lastActivity > Orbited.settings.connectTimeout) {
            this.finish({reason: "no open frame within connectTimeout"});
        } else if (silentTooLong(this)) {
            this.finish({reason: "no heartbeat within heartbeatTimeout", lost: true});
        }
    };
    SockJSTransport.prototype.handleFrame = function (text) {
        if (this.finished) {
            return;
        }
        this.lastActivity = Date.now();
        var frame;
        try {
            frame = SockJSFrames.parse(text);
        } catch (e) {
            this.finish({reason: "bad SockJS frame", lost: true});
            return;
        }
        if (frame === null) {
            log("ignoring unknown SockJS frame", text.slice(0, 40));
        } else if (frame.type === "o") {
            if (this.established) {
                // a second open frame: the server forgot our session and started a new one
                this.finish({reason: "session lost", lost: true});
                return;
            }
            this.established = true;
            this.events.established();
        } else if (frame.type === "a") {
            for (var i = 0; i < frame.messages.length && !this.finished; i++) {
                this.events.message(frame.messages[i]);
            }
        } else if (frame.type === "c") {
            this.finish({code: frame.code, reason: frame.reason});
        }
    };
    // The receiving request ended normally: open the next one on the same session.
    SockJSTransport.prototype.received = function () {
        this.request = null;
        this.failingSince = null;
        this.retryDelay = 100;
        if (!this.finished) {
            this.receive();
        }
    };
    // A request failed with an HTTP status (0: the network).
    SockJSTransport.prototype.failed = function (status, retry) {
        if (this.finished) {
            return;
        }
        if (!this.established) {
            this.finish({reason: "HTTP " + status + " before the session opened"});
            return;
        }
        if (status === 404) {
            this.finish({reason: "session unknown to the server (404)", lost: true});
            return;
        }
        var now = Date.now();
        if (this.failingSince === null) {
            this.failingSince = now;
        }
        if (now - this.failingSince > Orbited.settings.reconnectTimeout) {
            this.finish({reason: "server unreachable (HTTP " + status + ")", lost: true});
            return;
        }
        this.later(retry, this.retryDelay);
        this.retryDelay = Math.min(this.retryDelay * 2, 1000);
    };
    SockJSTransport.prototype.finish = function (info) {
        if (this.finished) {
            return;
        }
        this.close();
        info.established = this.established;
        this.events.closed(info);
    };
    SockJSTransport.prototype.close = function () {
        this.finished = true;
        root.clearInterval(this.watchdog);
        for (var i = 0; i < this.timers.length; i++) {
            root.clearTimeout(this.timers[i]);
        }
        this.timers = [];
        if (this.request) {
            this.request.abort();
            this.request = null;
        }
        if (this.sendRequest) {
            this.sendRequest.abort();
            this.sendRequest = null;
        }
        this.queue = [];
    };
    // The page's close(): the messages still queued (or being posted) go out first, then the
    // session ends.  Bounded as always: reconnectTimeout of failed requests or heartbeatTimeout
    // of silence ends it anyway.  The socket no longer listens, so nothing reaches the page.
    SockJSTransport.prototype.closeWhenSent = function () {
        this.closing = true;
        if (!this.sending && !this.queue.length) {
            this.close();
        }
    };
    SockJSTransport.prototype.sendText = function (text) {
        this.queue.push(text);
        this.flush();
    };
    SockJSTransport.prototype.sendBytes = function (data) {
        var parts = chunks(data);
        for (var i = 0; i < parts.length; i++) {
            this.queue.push(Orbited.base64.encodeBytes(parts[i]));
        }
        this.flush();
    };
    SockJSTransport.prototype.decode = function (message) {
        return Orbited.base64.decodeBytes(message);
    };
    SockJSTransport.prototype.flush = function () {
        var self = this;
        if (self.sending || self.finished || !self.queue.length) {
            return;
        }
        var batch = [], size = 0;
        while (self.queue.length && (batch.length === 0 || size + self.queue[0].length <= POST_LIMIT)) {
            size += self.queue[0].length;
            batch.push(self.queue.shift());
        }
        self.sending = true;
        var body = JSON.stringify(batch);
        var attempt = function () {
            self.sendRequest = self.post(body, function (status) {
                self.sendRequest = null;
                if (status >= 200 && status < 300) {
                    self.sending = false;
                    self.failingSince = null;
                    if (self.closing && !self.queue.length) {
                        self.close();
                    } else {
                        self.flush();
                    }
                } else {
                    self.failed(status, attempt);
                }
            });
        };
        attempt();
    };
    // POST body to xhr_send; done(status).
    SockJSTransport.prototype.post = function (body, done) {
        return httpRequest("POST", this.url + "/xhr_send", body, this.crossOrigin, {
            load: function (status) { done(status); },
            error: function () { done(0); }
        });
    };

    // One XMLHttpRequest; handlers: progress(text), load(status, text), error().
    function httpRequest(method, url, body, credentials, handlers) {
        var xhr = new root.XMLHttpRequest();
        var done = false;
        xhr.open(method, url, true);
        if (credentials) {
            xhr.withCredentials = true;
        }
        if (body !== null) {
            xhr.setRequestHeader("Content-Type", "text/plain;charset=UTF-8");
        }
        xhr.onprogress = function () {
            if (handlers.progress && !done) {
                handlers.progress(xhr.responseText);
            }
        };
        xhr.onload = function () {
            if (!done) {
                done = true;
                handlers.load(xhr.status, xhr.responseText);
            }
        };
        xhr.onerror = xhr.ontimeout = function () {
            if (!done) {
                done = true;
                handlers.error();
            }
        };
        xhr.send(body);
        return {
            abort: function () {
                done = true;
                xhr.abort();
            }
        };
    }

    function inherit(Child, Parent) {
        Child.prototype = Object.create(Parent.prototype);
        Child.prototype.constructor = Child;
        Child.supported = Parent.supported;
    }

    // xhr-streaming: POST .../xhr_streaming stays open and streams frames,
    // one per line, after a 2 KiB prelude of 'h'.
    function XhrStreamingTransport(events) {
        SockJSTransport.call(this, events);
    }
    inherit(XhrStreamingTransport, SockJSTransport);
    XhrStreamingTransport.prototype.receive = function () {
        var self = this;
        var reader = new SockJSFrames.LineReader();
        var seen = 0;
        var take = function (text) {
            var lines = reader.feed(text.slice(seen));
            seen = text.length;
            self.lastActivity = Date.now();
            for (var i = 0; i < lines.length && !self.finished; i++) {
                self.handleFrame(lines[i]);
            }
        };
        self.request = httpRequest("POST", self.url + "/xhr_streaming", null, self.crossOrigin, {
            progress: take,
            load: function (status, text) {
                if (status !== 200) {
                    self.request = null;
                    self.failed(status, function () { self.receive(); });
                    return;
                }
                take(text);
                if (reader.rest()) {
                    self.handleFrame(reader.rest());
                }
                self.received();
            },
            error: function () {
                self.request = null;
                self.failed(0, function () { self.receive(); });
            }
        });
    };
    transports["xhr-streaming"] = XhrStreamingTransport;

    // xhr-polling: POST .../xhr answers with one frame, then we poll again.
    function XhrPollingTransport(events) {
        SockJSTransport.call(this, events);
    }
    inherit(XhrPollingTransport, SockJSTransport);
    XhrPollingTransport.prototype.receive = function () {
        var self = this;
        self.request = httpRequest("POST", self.url + "/xhr", null, self.crossOrigin, {
            load: function (status, text) {
                self.request = null;
                if (status !== 200) {
                    self.failed(status, function () { self.receive(); });
                    return;
                }
                var lines = text.split("\n");
                for (var i = 0; i < lines.length && !self.finished; i++) {
                    if (lines[i]) {
                        self.handleFrame(lines[i]);
                    }
                }
                self.received();
            },
            error: function () {
                self.request = null;
                self.failed(0, function () { self.receive(); });
            }
        });
    };
    transports["xhr-polling"] = XhrPollingTransport;

    // eventsource: GET .../eventsource as text/event-stream, one frame per event.
    function EventSourceTransport(events) {
        SockJSTransport.call(this, events);
    }
    inherit(EventSourceTransport, SockJSTransport);
    EventSourceTransport.supported = function () {
        return typeof root.EventSource === "function" && typeof root.XMLHttpRequest === "function";
    };
    EventSourceTransport.prototype.receive = function () {
        var self = this;
        var source = new root.EventSource(self.url + "/eventsource");
        var gotData = false;
        source.onmessage = function (event) {
            gotData = true;
            self.handleFrame(event.data);
        };
        // The browser would reconnect by itself; we do it ourselves so that a
        // refused or unknown session is noticed instead of retried forever.
        source.onerror = function () {
            var permanent = source.readyState === 2;
            source.close();
            self.request = null;
            if (self.finished) {
                return;
            }
            if (gotData && !permanent) {
                self.received();  // the server ended the response (its response limit)
            } else {
                self.failed(gotData ? 404 : 0, function () { self.receive(); });
            }
        };
        self.request = {abort: function () { source.close(); }};
    };
    transports.eventsource = EventSourceTransport;

    // jsonp-polling: <script src=".../jsonp?c=callback"> calls callback("frame");
    // sends are form posts of d=<json> to .../jsonp_send.
    var jsonpCallbacks = Orbited._jp = Orbited._jp || {};
    var jsonpCounter = 0;

    function JsonpPollingTransport(events) {
        SockJSTransport.call(this, events);
    }
    inherit(JsonpPollingTransport, SockJSTransport);
    JsonpPollingTransport.supported = function () {
        return !!root.document && typeof root.fetch === "function";
    };
    JsonpPollingTransport.prototype.receive = function () {
        var self = this;
        var name = "c" + (++jsonpCounter);
        var script = root.document.createElement("script");
        var answered = false;
        var done = function () {
            delete jsonpCallbacks[name];
            if (script.parentNode) {
                script.parentNode.removeChild(script);
            }
            script.onload = script.onerror = null;
        };
        jsonpCallbacks[name] = function (frames) {
            answered = true;
            var lines = String(frames).split("\n");
            for (var i = 0; i < lines.length && !self.finished; i++) {
                if (lines[i]) {
                    self.handleFrame(lines[i]);
                }
            }
        };
        script.async = true;
        script.src = self.url + "/jsonp?c=" + encodeURIComponent("Orbited._jp." + name);
        script.onload = function () {
            done();
            self.request = null;
            if (answered) {
                self.received();
            } else {
                self.failed(500, function () { self.receive(); });
            }
        };
        script.onerror = function () {
            done();
            self.request = null;
            self.failed(0, function () { self.receive(); });
        };
        self.request = {
            abort: function () {
                done();
                // A <script> already removed may still run when its answer comes (Chrome does):
                // it must find a callback, or the page gets a TypeError.  Dropped after long
                // enough for any poll to have been answered.
                jsonpCallbacks[name] = noop;
                root.setTimeout(function () {
                    if (jsonpCallbacks[name] === noop) {
                        delete jsonpCallbacks[name];
                    }
                }, 120000);
            }
        };
        (root.document.head || root.document.documentElement).appendChild(script);
    };
    JsonpPollingTransport.prototype.post = function (body, done) {
        // A form-encoded POST is a "simple" request: it needs no CORS
        // preflight, and cross-origin we cannot read the answer anyway.
        var controller = typeof root.AbortController === "function" ? new root.AbortController() : null;
        var form = new root.URLSearchParams();
        form.set("d", body);
        var options = {method: "POST", body: form, mode: "no-cors", credentials: "include"};
        if (controller) {
            options.signal = controller.signal;
        }
        root.fetch(this.url + "/jsonp_send", options).then(function (response) {
            done(response.type === "opaque" ? 200 : response.status);
        }, function () {
            done(0);
        });
        return {abort: function () { if (controller) { controller.abort(); } }};
    };
    transports["jsonp-polling"] = JsonpPollingTransport;

    // sockjs-websocket: SockJS framing over a WebSocket to .../websocket (not
    // in the default list; /ws is the better WebSocket).
    function SockJSWebSocketTransport(events) {
        SockJSTransport.call(this, events);
    }
    inherit(SockJSWebSocketTransport, SockJSTransport);
    SockJSWebSocketTransport.supported = WebSocketTransport.supported;
    SockJSWebSocketTransport.prototype.receive = function () {
        var self = this;
        var url = self.url.replace(/^http/, "ws") + "/websocket";
        var ws = new root.WebSocket(url);
        ws.onmessage = function (event) {
            self.handleFrame(String(event.data));
        };
        ws.onclose = function (event) {
            if (!self.finished) {
                self.finish({code: event.code, reason: event.reason, lost: true});
            }
        };
        self.ws = ws;
        self.request = {
            abort: function () {
                ws.onmessage = ws.onclose = null;
                ws.close();
            }
        };
    };
    SockJSWebSocketTransport.prototype.flush = function () {
        while (this.queue.length && !this.finished) {
            this.ws.send(JSON.stringify([this.queue.shift()]));
        }
    };
    transports["sockjs-websocket"] = SockJSWebSocketTransport;

    // The transports to try, in order, for one socket.
    Orbited.chooseTransports = function (names) {
        var s = Orbited.settings;
        var list = names || s.transports || [];
        var out = [];
        for (var i = 0; i < list.length; i++) {
            var name = list[i];
            var Transport = transports[name];
            if (!Transport) {
                log("unknown transport", name);
                continue;
            }
            if (s.streaming === false && (name === "xhr-streaming" || name === "eventsource")) {
                continue;
            }
            if (Transport.supported()) {
                out.push(name);
            }
        }
        return out;
    };

    // ------------------------------------------------------------------
    // TCPSocket

    var socketCounter = 0;
    var liveSockets = {};

    function noop() {}

    function call(target, name, args) {
        var fn = target[name];
        if (typeof fn !== "function") {
            return;
        }
        try {
            fn.apply(target, args || []);
        } catch (e) {
            // report it without breaking the socket
            root.setTimeout(function () { throw e; }, 0);
        }
    }

    // What a closed transport means to the page.
    function closeCodeFor(info) {
        var code = info.code;
        if (typeof code === "number" && code >= 4101 && code <= 4999) {
            return code - 4000;  // /ws and /sockjs carry TCPSocket errors as 4000 + code
        }
        if (info.lost) {
            return Orbited.Errors.ConnectionTimeout;
        }
        return Orbited.Statuses.ServerClosedConnection;
    }

    function TCPSocket() {
        if (arguments.length > 0) {
            throw new Error("TCPSocket() accepts no arguments");
        }
        this.id = ++socketCounter;
        this.readyState = this.READY_STATE_INITIALIZED;
        this.onopen = noop;
        this.onread = noop;
        this.onclose = noop;
        this.binaryType = "string";  // binary reads as byte strings (0.7); or "arraybuffer"
        this.transports = null;      // this socket's own list, instead of Orbited.settings.transports
        this.transport = null;       // the transport in use once open
        this.closeReason = null;     // why the socket closed, for logs
        this._channel = null;
        this._closeFired = false;
    }

    TCPSocket.prototype.READY_STATE_INITIALIZED = TCPSocket.READY_STATE_INITIALIZED = 1;
    TCPSocket.prototype.READY_STATE_OPENING = TCPSocket.READY_STATE_OPENING = 2;
    TCPSocket.prototype.READY_STATE_OPEN = TCPSocket.READY_STATE_OPEN = 3;
    TCPSocket.prototype.READY_STATE_CLOSING = TCPSocket.READY_STATE_CLOSING = 4;
    TCPSocket.prototype.READY_STATE_CLOSED = TCPSocket.READY_STATE_CLOSED = 5;

    TCPSocket.prototype.toString = function () {
        return "<Orbited.TCPSocket " + this.id + ">";
    };

    TCPSocket.prototype.open = function (hostname, port, isBinary) {
        if (this.readyState !== this.READY_STATE_INITIALIZED) {
            throw new Error("Invalid readyState");
        }
        if (!hostname) {
            throw new Error("No hostname specified");
        }
        port = parseInt(port, 10);
        if (isNaN(port) || port < 1 || port > 65535) {
            throw new Error("Invalid port specified");
        }
        hostname = String(hostname);
        if (/[\s\/]/.test(hostname)) {
            throw new Error("Invalid hostname specified");
        }
        this._binary = !!isBinary;
        this._decoder = this._binary ? null : Orbited.utf8.decoder();
        this._destination = (hostname.indexOf(":") >= 0 && hostname.charAt(0) !== "[" ?
                             "[" + hostname + "]" : hostname) + ":" + port;
        this._candidates = Orbited.chooseTransports(this.transports);
        this.readyState = this.READY_STATE_OPENING;
        liveSockets[this.id] = this;
        this._tryNext("no transport available");
    };

    TCPSocket.prototype._tryNext = function (why) {
        var self = this;
        var name = self._candidates.shift();
        if (name === undefined) {
            self._finish(Orbited.Errors.ConnectionTimeout, "could not reach Orbited: " + why);
            return;
        }
        log(self + " trying " + name);
        var handshakeSent = false;
        var answered = false;
        var timer = null;
        var channel;
        var events = {
            established: function () {
                root.clearTimeout(timer);
                if (channel !== self._channel) {
                    return;
                }
                self.transport = name;
                handshakeSent = true;
                channel.sendText(self._destination);
            },
            message: function (message) {
                if (channel !== self._channel) {
                    return;
                }
                if (answered) {
                    self._deliver(channel.decode(message));
                    return;
                }
                var answer = typeof message === "string" ? message : bytes.toByteString(message);
                answered = true;
                if (answer.charAt(0) === "1") {
                    self.readyState = self.READY_STATE_OPEN;
                    call(self, "onopen");
                } else {
                    var code = parseInt(answer.slice(1, 4), 10);
                    self._finish(isNaN(code) ? Orbited.Errors.InvalidHandshake : code,
                                 "Orbited refused: " + answer);
                }
            },
            closed: function (info) {
                root.clearTimeout(timer);
                if (channel !== self._channel) {
                    return;
                }
                self._channel = null;
                if (!info.established && !handshakeSent) {
                    self._tryNext(name + ": " + (info.reason || "closed with " + info.code));
                } else if (!answered && !info.code && info.lost) {
                    self._finish(Orbited.Errors.ConnectionTimeout, name + " lost before the handshake answer");
                } else {
                    self._finish(closeCodeFor(info), name + " closed: " + (info.reason || info.code));
                }
            }
        };
        channel = self._channel = new transports[name](events);
        timer = root.setTimeout(function () {
            if (channel === self._channel && !handshakeSent) {
                channel.close();
                self._channel = null;
                self._tryNext(name + ": not open within connectTimeout");
            }
        }, Orbited.settings.connectTimeout);
        try {
            channel.start();
        } catch (e) {
            root.clearTimeout(timer);
            self._channel = null;
            self._tryNext(name + ": " + e);
        }
    };

    TCPSocket.prototype._deliver = function (data) {
        if (this.readyState !== this.READY_STATE_OPEN || !data.length) {
            return;
        }
        var out;
        if (!this._binary) {
            out = this._decoder.decode(data);
            if (!out.length) {
                return;
            }
        } else if (this.binaryType === "arraybuffer") {
            out = data.buffer.byteLength === data.length ? data.buffer : data.slice().buffer;
        } else {
            out = bytes.toByteString(data);
        }
        call(this, "onread", [out]);
    };

    TCPSocket.prototype.send = function (data) {
        if (this.readyState !== this.READY_STATE_OPEN) {
            throw new Error("Invalid readyState");
        }
        var raw;
        if (typeof data === "string") {
            raw = this._binary ? bytes.fromByteString(data) : Orbited.utf8.encodeBytes(data);
        } else {
            raw = bytes.from(data);
        }
        if (raw.length) {
            this._channel.sendBytes(raw);
        }
    };

    // What the page sent before close() still reaches the backend, on every transport (as in 0.7,
    // where only reset() dropped it).
    TCPSocket.prototype.close = function () {
        this._finish(Orbited.Errors.UserConnectionReset, "closed by the page", {flush: true});
    };

    // Immediate teardown for page unload: onclose(103) fires before reset() returns.
    TCPSocket.prototype.reset = function () {
        this._finish(Orbited.Errors.UserConnectionReset, "reset by the page", {now: true});
    };

    // how: {flush: true} lets the transport send what it holds first; {now: true} calls onclose
    // before returning.
    TCPSocket.prototype._finish = function (code, why, how) {
        how = how || {};
        if (this.readyState === this.READY_STATE_CLOSED) {
            return;
        }
        var self = this;
        self.readyState = self.READY_STATE_CLOSED;
        self.closeReason = why;
        delete liveSockets[self.id];
        log(self + " closed with " + code + ": " + why);
        if (self._channel) {
            var channel = self._channel;
            self._channel = null;
            if (how.flush) {
                channel.closeWhenSent();
            } else {
                channel.close();
            }
        }
        if (self._closeFired) {
            return;
        }
        self._closeFired = true;
        if (how.now) {
            call(self, "onclose", [code]);
        } else {
            root.setTimeout(function () { call(self, "onclose", [code]); }, 0);
        }
    };

    Orbited.TCPSocket = TCPSocket;

    Orbited.test = {
        socketcontrol: {
            kill: function (socket) {
                if (socket && liveSockets[socket.id] === socket) {
                    socket._finish(Orbited.Statuses.SocketControlKilled, "killed by Orbited.test.socketcontrol");
                }
            }
        }
    };

    // ------------------------------------------------------------------
    // A WebSocket look-alike over a TCPSocket, for libraries that take a
    // WebSocket factory (e.g. @stomp/stompjs's webSocketFactory) and should
    // talk to a plain TCP backend:
    //
    //   webSocketFactory: function () { return new Orbited.WebSocketAdapter("localhost", 61613); }

    function WebSocketAdapter(hostname, port) {
        var self = this;
        var target = typeof root.EventTarget === "function" ? new root.EventTarget() : null;
        self._target = target;
        self.url = "tcp://" + hostForUrl(hostname) + ":" + port;
        self.protocol = "";
        self.extensions = "";
        self.bufferedAmount = 0;
        self.binaryType = "arraybuffer";
        self.readyState = WebSocketAdapter.CONNECTING;
        self.onopen = self.onmessage = self.onclose = self.onerror = null;
        var socket = self._socket = new TCPSocket();
        socket.binaryType = "arraybuffer";
        socket.onopen = function () {
            self.readyState = WebSocketAdapter.OPEN;
            self._emit("open", {});
        };
        socket.onread = function (data) {
            var payload = data;
            if (self.binaryType === "blob" && typeof root.Blob === "function") {
                payload = new root.Blob([data]);
            }
            self._emit("message", {data: payload});
        };
        socket.onclose = function (code) {
            self.readyState = WebSocketAdapter.CLOSED;
            var clean = code === Orbited.Errors.UserConnectionReset ||
                code === Orbited.Statuses.ServerClosedConnection;
            var wsCode = clean ? (self._closeCode || 1000) :
                code === Orbited.Errors.ConnectionTimeout ? 1006 : 4000 + code;
            if (!clean) {
                self._emit("error", {});
            }
            self._emit("close", {code: wsCode, reason: self._closeReason || Orbited.codeName(code),
                                 wasClean: clean, orbitedCode: code});
        };
        socket.open(hostname, port, true);
    }
    WebSocketAdapter.CONNECTING = WebSocketAdapter.prototype.CONNECTING = 0;
    WebSocketAdapter.OPEN = WebSocketAdapter.prototype.OPEN = 1;
    WebSocketAdapter.CLOSING = WebSocketAdapter.prototype.CLOSING = 2;
    WebSocketAdapter.CLOSED = WebSocketAdapter.prototype.CLOSED = 3;

    WebSocketAdapter.prototype._emit = function (type, fields) {
        var event;
        try {
            event = type === "message" ? new root.MessageEvent("message", fields) :
                type === "close" ? new root.CloseEvent("close", fields) : new root.Event(type);
        } catch (e) {
            event = {type: type};
        }
        if (type === "close" && fields.orbitedCode !== undefined) {
            try {
                event.orbitedCode = fields.orbitedCode;
            } catch (e) {
                // a frozen event: the code is also in closeReason
            }
        }
        var handler = this["on" + type];
        if (typeof handler === "function") {
            try {
                handler.call(this, event);
            } catch (e) {
                root.setTimeout(function () { throw e; }, 0);
            }
        }
        if (this._target && event instanceof root.Event) {
            this._target.dispatchEvent(event);
        }
    };
    WebSocketAdapter.prototype.addEventListener = function (type, listener, options) {
        if (this._target) {
            this._target.addEventListener(type, listener, options);
        }
    };
    WebSocketAdapter.prototype.removeEventListener = function (type, listener, options) {
        if (this._target) {
            this._target.removeEventListener(type, listener, options);
        }
    };
    WebSocketAdapter.prototype.send = function (data) {
        if (this.readyState === WebSocketAdapter.CONNECTING) {
            throw new Error("InvalidStateError: still connecting");
        }
        if (this.readyState !== WebSocketAdapter.OPEN) {
            return;  // like a WebSocket: sends after close are dropped
        }
        this._socket.send(typeof data === "string" ? Orbited.utf8.encodeBytes(data) : bytes.from(data));
    };
    WebSocketAdapter.prototype.close = function (code, reason) {
        if (this.readyState === WebSocketAdapter.CLOSED || this.readyState === WebSocketAdapter.CLOSING) {
            return;
        }
        this._closeCode = code;
        this._closeReason = reason;
        this.readyState = WebSocketAdapter.CLOSING;
        this._socket.close();
    };

    Orbited.WebSocketAdapter = WebSocketAdapter;
})(typeof window !== "undefined" ? window : this);
