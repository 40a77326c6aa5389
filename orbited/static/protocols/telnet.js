/* telnet.js: a line console over an Orbited TCPSocket.
 *
 *   var t = new TelnetClient();
 *   t.onmessage = function (line) { show(line); };
 *   t.connect("localhost", 8002);
 *   t.send("hello");              // sends "hello\r\n"
 *
 * Orbited 0.7's API (connect, send, close; onopen, onmessage(line),
 * onclose(code)).  Unlike 0.7, a line split across reads comes out whole,
 * once; onpartial(text) shows what has arrived of an unfinished line (a
 * prompt, say).  Telnet commands (IAC ...) never reach the page: every option
 * the server offers or asks for is refused, IAC IAC is a 0xFF byte, and the
 * rest is read as UTF-8.  Needs Orbited.js.
 */
(function (root) {
    "use strict";

    function Ignored() {}

    // A page handler's exception, thrown again on its own (as TCPSocket does with its callbacks).
    function rethrow(e) {
        root.setTimeout(function () { throw e; }, 0);
    }

    var IAC = 255, DONT = 254, DO = 253, WONT = 252, WILL = 251, SB = 250, SE = 240, CR = 13;
    var DATA = 0, COMMAND = 1, OPTION = 2, SUBNEGOTIATION = 3, SUBNEGOTIATION_IAC = 4;

    // Telnet's command layer (RFC 854/855) taken off a byte stream: data bytes come out, and
    // an option the server offers (WILL) or asks for (DO) is refused (DONT, WONT): the client
    // stays a plain NVT.  Refusals never answer WONT/DONT, so no two parties loop.  A NUL after
    // CR is NVT's bare CR and is dropped.  The state carries over, so a command may be split
    // anywhere across reads.
    function TelnetFilter(answer) {
        this.answer = answer;   // fn(byteString) for the replies
        this.state = DATA;
        this.verb = 0;
        this.lastData = -1;
    }
    TelnetFilter.prototype.feed = function (input) {
        var out = new Uint8Array(input.length), n = 0;
        for (var i = 0; i < input.length; i++) {
            var b = input[i];
            switch (this.state) {
            case DATA:
                if (b === IAC) {
                    this.state = COMMAND;
                } else if (!(b === 0 && this.lastData === CR)) {
                    out[n++] = b;
                }
                this.lastData = b;
                break;
            case COMMAND:
                if (b === IAC) {
                    out[n++] = b;
                    this.lastData = b;
                    this.state = DATA;
                } else if (b >= WILL) {
                    this.verb = b;
                    this.state = OPTION;
                } else {
                    this.state = b === SB ? SUBNEGOTIATION : DATA;   // NOP, GA, ... mean nothing here
                }
                break;
            case OPTION:
                if (this.verb === WILL || this.verb === DO) {
                    this.answer(String.fromCharCode(IAC, this.verb === WILL ? DONT : WONT, b));
                }
                this.state = DATA;
                break;
            case SUBNEGOTIATION:
                this.state = b === IAC ? SUBNEGOTIATION_IAC : SUBNEGOTIATION;
                break;
            case SUBNEGOTIATION_IAC:
                this.state = b === SE ? DATA : SUBNEGOTIATION;
                break;
            }
        }
        return out.subarray(0, n);
    };

    function TelnetClient() {
        var self = this;
        var conn = null;
        var buffer = "";

        self.lineEnding = "\r\n";
        self.maxLineLength = 65536;
        self.onopen = Ignored;
        self.onmessage = Ignored;
        self.onpartial = Ignored;
        self.onclose = Ignored;

        self._createTransport = function () {
            var Socket = self.transport || root.TCPSocket || root.Orbited.TCPSocket;
            return new Socket();
        };

        // Connecting again closes a connection still open (its onclose follows) and never lets
        // the old connection's close be taken for the new one's.
        self.connect = function (host, port) {
            if (conn) {
                conn.close();
            }
            buffer = "";
            var c = conn = self._createTransport();
            var decoder = root.Orbited.utf8.decoder();
            var filter = new TelnetFilter(function (reply) {
                if (conn === c) {
                    c.send(reply);
                }
            });
            conn.onopen = function () { self.onopen(); };
            conn.onclose = function (code) {
                if (conn !== c) {
                    self.onclose(code);  // an old connection: its last partial line went with it
                    return;
                }
                conn = null;
                if (buffer) {
                    var rest = buffer;
                    buffer = "";
                    try {
                        self.onmessage(rest);  // the last line had no newline
                    } catch (e) {
                        rethrow(e);  // and onclose still comes
                    }
                }
                self.onclose(code);
            };
            conn.onread = function (data) {
                data = decoder.decode(filter.feed(root.Orbited.bytes.from(data)));
                if (!data) {
                    return;   // only telnet commands (or part of a character)
                }
                buffer += data;
                var lines = buffer.split("\n");
                buffer = lines.pop();
                for (var i = 0; i < lines.length; i++) {
                    // a page handler that throws must not cost the lines after it in this read
                    try {
                        self.onmessage(lines[i].replace(/\r$/, ""));
                    } catch (e) {
                        rethrow(e);
                    }
                }
                if (buffer.length > self.maxLineLength) {
                    self.onmessage(buffer);
                    buffer = "";
                } else if (buffer) {
                    self.onpartial(buffer);
                }
            };
            conn.open(host, port, true);   // bytes: telnet commands are not UTF-8
        };

        self.send = function (line) {
            if (!conn) {
                throw new Error("TelnetClient is not connected");
            }
            // UTF-8 never has a 0xFF byte, so nothing here needs IAC doubling
            conn.send(root.Orbited.utf8.encode(String(line) + self.lineEnding));
        };

        self.close = function () {
            if (conn) {
                conn.close();
            }
        };

        self.reset = function () {
            if (conn) {
                conn.reset();
            }
        };
    }

    TelnetClient.TelnetFilter = TelnetFilter;
    root.TelnetClient = TelnetClient;
})(typeof window !== "undefined" ? window : this);
