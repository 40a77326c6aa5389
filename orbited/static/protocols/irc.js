/* irc.js: an IRC client (RFC 1459/2812) over an Orbited TCPSocket.
 *
 *   var irc = new IRCClient();
 *   irc.onopen = function () { irc.nick("alice"); irc.ident("alice", "0", "Alice"); };
 *   irc.onconnect = function () { irc.join("#orbited"); };      // after 001 RPL_WELCOME
 *   irc.onPRIVMSG = function (command) { show(command.prefix, command.args[1]); };
 *   irc.connect("localhost", 6667);
 *
 * Orbited 0.7's API: connect, ident, nick, join, names, part, privmsg,
 * action, quit, close, reset; PING is answered with PONG; numeric replies go
 * to onresponse (below 400) or onerror (400 and up); any other command to
 * on<COMMAND>(command) with command = {prefix, type, args, nick, tags}.
 * Lines are split on CRLF and kept whole across reads; user text can never
 * inject a second command (CR, LF and NUL are refused or split out).
 * docs/client.md is the reference.  Needs Orbited.js.
 */
(function (root) {
    "use strict";

    var MAX_LINE_BYTES = 510;  // 512 with CRLF (RFC 2812 2.3)

    var TAG_ESCAPES = {":": ";", "s": " ", "r": "\r", "n": "\n"};

    // An IRCv3 message-tag value as sent (a\sb\:c) -> its text ("a b;c"); a lone trailing
    // backslash is dropped, any other escaped character stands for itself.
    function unescapeTag(value) {
        return value.replace(/\\(.?)/g, function (all, ch) {
            return TAG_ESCAPES[ch] || ch;
        });
    }

    // "[@tags] [:prefix] COMMAND params... [:trailing]" -> {tags, prefix, nick, type, args}
    function parseLine(line) {
        var tags = null;
        if (line.charAt(0) === "@") {
            var space = line.indexOf(" ");
            tags = {};
            line.slice(1, space).split(";").forEach(function (tag) {
                var eq = tag.indexOf("=");
                tags[eq < 0 ? tag : tag.slice(0, eq)] = eq < 0 ? true : unescapeTag(tag.slice(eq + 1));
            });
            line = line.slice(space + 1).replace(/^ +/, "");
        }
        var prefix = null;
        if (line.charAt(0) === ":") {
            var end = line.indexOf(" ");
            prefix = line.slice(1, end < 0 ? line.length : end);
            line = end < 0 ? "" : line.slice(end + 1).replace(/^ +/, "");
        }
        var args = [];
        var trailing = line.indexOf(" :");
        var head = line;
        if (line.charAt(0) === ":") {
            trailing = -1;
            head = "";
            args.push(line.slice(1));
        } else if (trailing >= 0) {
            head = line.slice(0, trailing);
        }
        var words = head.split(" ").filter(function (w) { return w.length > 0; });
        var type = (words.shift() || "").toUpperCase();
        args = words.concat(args);
        if (trailing >= 0) {
            args.push(line.slice(trailing + 2));
        }
        // prefix = servername / nickname [["!" user] "@" host] (RFC 2812 2.3.1)
        var nick = prefix ? prefix.split(/[!@]/)[0] : prefix;
        return {prefix: prefix, nick: nick, type: type, args: args, tags: tags};
    }

    function checkParam(value, name) {
        value = String(value);
        if (/[\r\n\0]/.test(value)) {
            throw new Error("IRC " + name + " may not contain CR, LF or NUL");
        }
        return value;
    }

    function checkWord(value, name) {
        value = checkParam(value, name);
        if (!value || /\s/.test(value) || value.charAt(0) === ":") {
            throw new Error("IRC " + name + " must be one word not starting with ':': " + JSON.stringify(value));
        }
        return value;
    }

    function byteLength(text) {
        return new TextEncoder().encode(text).length;
    }

    // Split text into pieces whose UTF-8 encoding fits `limit` bytes, never inside a character.
    function splitBytes(text, limit) {
        var out = [], piece = "", size = 0;
        for (var ch of text) {
            var n = byteLength(ch);
            if (size + n > limit && piece) {
                out.push(piece);
                piece = "";
                size = 0;
            }
            piece += ch;
            size += n;
        }
        if (piece || !out.length) {
            out.push(piece);
        }
        return out;
    }

    var strictUtf8 = new TextDecoder("utf-8", {fatal: true});
    var windows1252 = new TextDecoder("windows-1252");

    function isUtf8(raw) {
        try {
            strictUtf8.decode(raw);
            return true;
        } catch (e) {
            return false;
        }
    }

    // One line's bytes (a byte string) -> text.  IRC has no charset: each client sends its own.
    // UTF-8 is read as UTF-8; each byte that is not part of a UTF-8 character is read as
    // windows-1252 (Latin-1 and its superset, what older clients send) rather than turned into
    // U+FFFD.  Byte by byte, not line by line: a UTF-8 line the server cut inside a character
    // (ngircd does, adding "[CUT]") keeps its text and only the stray bytes change.
    function decodeLine(line) {
        var raw = root.Orbited.bytes.fromByteString(line);
        if (isUtf8(raw)) {
            return strictUtf8.decode(raw);
        }
        var out = "", start = 0, i = 0;
        while (i < raw.length) {
            var b = raw[i];
            var n = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC2 ? 2 : 0;
            if (n && i + n <= raw.length && (n === 1 || isUtf8(raw.subarray(i, i + n)))) {
                i += n;
                continue;
            }
            out += strictUtf8.decode(raw.subarray(start, i)) + windows1252.decode(raw.subarray(i, i + 1));
            start = i = i + 1;
        }
        return out + strictUtf8.decode(raw.subarray(start));
    }

    function Ignored() {}

    function IRCClient() {
        var self = this;
        var conn = null;
        var buffer = "";
        var registered = false;  // 001 came: from then on only the server's NICK changes our nick
        var dropping = false;    // the line being read is too long and is dropped up to its LF

        self.onopen = Ignored;
        self.onconnect = Ignored;   // 001 RPL_WELCOME: registered, commands may follow
        self.onclose = Ignored;
        self.onerror = Ignored;     // numeric replies 400-599
        self.onresponse = Ignored;  // other numeric replies
        self.nickname = null;

        self._createTransport = function () {
            var Socket = self.transport || root.TCPSocket || root.Orbited.TCPSocket;
            return new Socket();
        };

        // Connecting again closes a connection still open (its onclose follows) and never lets
        // the old connection's close be taken for the new one's.
        self.connect = function (hostname, port) {
            if (conn) {
                conn.close();
            }
            buffer = "";
            registered = false;
            dropping = false;
            var c = conn = self._createTransport();
            conn.onopen = function () {
                self.onopen();
            };
            conn.onclose = function (code) {
                if (conn === c) {
                    conn = null;
                }
                self.onclose(code);
            };
            conn.onread = function (data) {
                buffer += root.Orbited.bytes.toByteString(root.Orbited.bytes.from(data));
                var lines = buffer.split("\n");
                buffer = lines.pop();
                if (dropping && lines.length) {
                    lines.shift();     // the end of the line dropped: not a line of its own
                    dropping = false;
                }
                if (buffer.length > 65536) {
                    buffer = "";       // no line is this long: drop it rather than grow without bound,
                    dropping = true;   // up to its end
                }
                for (var i = 0; i < lines.length && conn; i++) {
                    var line = decodeLine(lines[i].replace(/\r$/, ""));
                    if (line.length > 0) {
                        // a page handler that throws must not cost the lines after it in this read
                        try {
                            dispatch(line);
                        } catch (e) {
                            root.setTimeout(function () { throw e; }, 0);
                        }
                    }
                }
            };
            conn.open(hostname, port, true);   // bytes: each line is decoded on its own (decodeLine)
        };

        // Send one raw line (no CR/LF inside).  A line over 512 bytes with its CRLF throws: servers
        // do not take it (ngircd drops the whole connection: "ERROR :Request too long").
        self.raw = function (line) {
            if (!conn) {
                throw new Error("IRCClient is not connected");
            }
            line = checkParam(line, "line");
            if (byteLength(line) > MAX_LINE_BYTES) {
                throw new Error("IRC line longer than 512 bytes with its CRLF: " + JSON.stringify(line.slice(0, 40)));
            }
            conn.send(root.Orbited.utf8.encode(line + "\r\n"));
        };

        // send(COMMAND, word, ..., trailing): the last argument may contain spaces, and is cut (at a
        // character) to what fits the 512-byte line: a long PART or QUIT reason or TOPIC goes out
        // shortened rather than cost the connection.
        self.send = function (command) {
            var params = Array.prototype.slice.call(arguments, 1);
            var line = checkWord(command, "command");
            for (var i = 0; i < params.length; i++) {
                if (i < params.length - 1) {
                    line += " " + checkWord(params[i], "parameter");
                } else {
                    line += " :";
                    line += splitBytes(checkParam(params[i], "text"), MAX_LINE_BYTES - byteLength(line))[0];
                }
            }
            self.raw(line);
        };

        self.ident = function (nickname, modes, realName) {
            // USER <user> <mode> <unused> :<realname>; 0.7 pages passed "mode unused" in one string
            var mode = String(modes === undefined || modes === null ? "0" : modes).trim().split(/\s+/);
            self.send("USER", nickname, mode[0] || "0", mode[1] || "*", realName || nickname);
        };
        // Before registration the nick asked for is the one we will have (001 confirms it); after
        // it, a change may be refused (433 nickname in use), so `nickname` waits for the server's NICK.
        self.nick = function (nickname) {
            if (!registered) {
                self.nickname = nickname;
            }
            self.send("NICK", nickname);
        };
        self.join = function (channel, key) {
            if (key) {
                self.raw("JOIN " + checkWord(channel, "channel") + " " + checkWord(key, "key"));
            } else {
                self.raw("JOIN " + checkWord(channel, "channel"));
            }
        };
        self.names = function (channel) {
            self.raw("NAMES " + checkWord(channel, "channel"));
        };
        self.part = function (channel, reason) {
            self.send("PART", channel, reason || "leaving");
        };
        // Before the socket is open (or once it has closed) there is no one to say QUIT to: the
        // socket just closes, and quit() never throws.
        self.quit = function (reason) {
            if (!conn) {
                return;
            }
            if (typeof conn.READY_STATE_OPEN !== "number" || conn.readyState === conn.READY_STATE_OPEN) {
                self.send("QUIT", reason || "leaving");
            }
            conn.close();
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

        // Text with newlines becomes one message per line (empty lines send nothing: IRC has no
        // empty message); long lines are split.
        function sayTo(command, destination, message, wrap) {
            checkWord(destination, "destination");
            var room = MAX_LINE_BYTES - 100 - destination.length;  // leave room for the prefix the server adds
            String(message).split(/\r\n|\r|\n/).forEach(function (line) {
                if (/\0/.test(line)) {
                    throw new Error("IRC text may not contain NUL");
                }
                if (!line) {
                    return;
                }
                splitBytes(line, room).forEach(function (piece) {
                    self.raw(command + " " + destination + " :" + wrap(piece));
                });
            });
        }
        function plain(text) { return text; }
        self.privmsg = function (destination, message) {
            sayTo("PRIVMSG", destination, message, plain);
        };
        self.action = function (destination, message) {
            sayTo("PRIVMSG", destination, message, function (text) { return "\x01ACTION " + text + "\x01"; });
        };
        self.notice = function (destination, message) {
            sayTo("NOTICE", destination, message, plain);
        };

        function dispatch(line) {
            var command = parseLine(line);
            if (command.type === "PING") {
                self.raw("PONG :" + (command.args[0] || ""));
            }
            if (/^\d{3}$/.test(command.type)) {
                var code = parseInt(command.type, 10);
                if (code === 1) {
                    registered = true;
                    if (command.args[0]) {
                        self.nickname = command.args[0];
                    }
                    self.onconnect(command);
                }
                if (code >= 400 && code < 600) {
                    return self.onerror(command);
                }
                return self.onresponse(command);
            }
            if (command.type === "NICK" && command.nick === self.nickname && command.args[0]) {
                self.nickname = command.args[0];
            }
            if (command.type === "PRIVMSG" || command.type === "NOTICE") {
                var msg = command.args[1] || "";
                if (msg.length > 1 && msg.charCodeAt(0) === 1) {
                    var inner = msg.slice(1, msg.charCodeAt(msg.length - 1) === 1 ? -1 : msg.length);
                    var words = inner.split(" ");
                    if (command.type === "PRIVMSG" && words[0] === "ACTION") {
                        command.type = "ACTION";
                        command.args = [command.args[0], inner.slice(7)];
                    } else {
                        command.ctcp = words[0];
                        command.type = command.type === "PRIVMSG" ? "CTCP" : "CTCPREPLY";
                        command.args = [command.args[0]].concat(words);
                    }
                }
            }
            var handler = self["on" + command.type];
            if (typeof handler === "function") {
                handler.call(self, command);
            }
        }
    }

    IRCClient.parseLine = parseLine;
    IRCClient.splitBytes = splitBytes;
    IRCClient.decodeLine = decodeLine;
    root.IRCClient = IRCClient;
})(typeof window !== "undefined" ? window : this);
