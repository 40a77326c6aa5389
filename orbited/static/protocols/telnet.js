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
 * prompt, say).  No telnet option negotiation.  Needs Orbited.js.
 */
(function (root) {
    "use strict";

    function Ignored() {}

    // A page handler's exception, thrown again on its own (as TCPSocket does with its callbacks).
    function rethrow(e) {
        root.setTimeout(function () { throw e; }, 0);
    }

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
            conn.open(host, port, false);
        };

        self.send = function (line) {
            if (!conn) {
                throw new Error("TelnetClient is not connected");
            }
            conn.send(String(line) + self.lineEnding);
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

    root.TelnetClient = TelnetClient;
})(typeof window !== "undefined" ? window : this);
