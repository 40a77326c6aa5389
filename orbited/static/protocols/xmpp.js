/* xmpp.js: an XMPP (RFC 6120/6121) client over an Orbited TCPSocket.
 *
 *   var xmpp = new XMPPClient();
 *   xmpp.onSocketConnect = function () {
 *       xmpp.connectServer("example.com", function () {
 *           xmpp.login("alice", "secret", loggedIn, failed);
 *       }, failed);
 *   };
 *   xmpp.onMessage = function (from, from_, body, stamp) { ... };
 *   xmpp.connect("localhost", 5222);
 *
 * Orbited 0.7's API (connect, connectServer, login, register, msg,
 * subscribe, unsubscribe, sendSubscribed, quit, send, join_room,
 * leave_room, groupchat_msg, set_presence; onPresence, onMessage,
 * onSocketConnect, onUnknownNode), brought up to date: SASL SCRAM-SHA-1 or
 * PLAIN instead of the long-gone jabber:iq:auth, resource binding, the
 * roster (onRoster), multi-user chat (onGroupchat, onRoomJoined), text
 * always XML-escaped, stanzas split by a real tokenizer and parsed with
 * DOMParser, and no reconnect loop: onclose(code) says the socket closed.
 * Plain TCP only (no STARTTLS): put TLS between the browser and Orbited.
 * docs/client.md is the reference.  Needs Orbited.js.
 */
(function (root) {
    "use strict";

    var NS = {
        client: "jabber:client",
        stream: "http://etherx.jabber.org/streams",
        sasl: "urn:ietf:params:xml:ns:xmpp-sasl",
        tls: "urn:ietf:params:xml:ns:xmpp-tls",
        bind: "urn:ietf:params:xml:ns:xmpp-bind",
        session: "urn:ietf:params:xml:ns:xmpp-session",
        roster: "jabber:iq:roster",
        register: "jabber:iq:register",
        muc: "http://jabber.org/protocol/muc",
        mucUser: "http://jabber.org/protocol/muc#user",
        mucOwner: "http://jabber.org/protocol/muc#owner",
        data: "jabber:x:data",
        delay: "urn:xmpp:delay",
        ping: "urn:xmpp:ping",
        stanzas: "urn:ietf:params:xml:ns:xmpp-stanzas"
    };

    // --- XML text

    // Characters XML 1.0 cannot carry at all, and lone surrogates.
    var INVALID_XML = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(^|[^\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

    function escapeXml(text) {
        return String(text === undefined || text === null ? "" : text)
            .replace(INVALID_XML, function (all, before) { return before || ""; })
            .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
            .replace(/"/g, "&quot;").replace(/'/g, "&apos;");
    }

    // --- SHA-1, HMAC-SHA-1, PBKDF2 (pure JS: crypto.subtle exists only on secure origins)

    function sha1(data) {
        var ml = data.length;
        var withPad = ((ml + 9 + 63) >> 6) << 6;
        var msg = new Uint8Array(withPad);
        msg.set(data);
        msg[ml] = 0x80;
        var bits = ml * 8;
        var view = new DataView(msg.buffer);
        view.setUint32(withPad - 4, bits >>> 0);
        view.setUint32(withPad - 8, Math.floor(bits / 4294967296));
        var h0 = 0x67452301, h1 = 0xEFCDAB89, h2 = 0x98BADCFE, h3 = 0x10325476, h4 = 0xC3D2E1F0;
        var w = new Int32Array(80);
        for (var off = 0; off < withPad; off += 64) {
            for (var i = 0; i < 16; i++) {
                w[i] = view.getInt32(off + i * 4);
            }
            for (i = 16; i < 80; i++) {
                var x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
                w[i] = (x << 1) | (x >>> 31);
            }
            var a = h0, b = h1, c = h2, d = h3, e = h4;
            for (i = 0; i < 80; i++) {
                var f, k;
                if (i < 20) {
                    f = (b & c) | (~b & d);
                    k = 0x5A827999;
                } else if (i < 40) {
                    f = b ^ c ^ d;
                    k = 0x6ED9EBA1;
                } else if (i < 60) {
                    f = (b & c) | (b & d) | (c & d);
                    k = 0x8F1BBCDC;
                } else {
                    f = b ^ c ^ d;
                    k = 0xCA62C1D6;
                }
                var t = (((a << 5) | (a >>> 27)) + f + e + k + w[i]) | 0;
                e = d;
                d = c;
                c = (b << 30) | (b >>> 2);
                b = a;
                a = t;
            }
            h0 = (h0 + a) | 0;
            h1 = (h1 + b) | 0;
            h2 = (h2 + c) | 0;
            h3 = (h3 + d) | 0;
            h4 = (h4 + e) | 0;
        }
        var out = new Uint8Array(20);
        var ov = new DataView(out.buffer);
        [h0, h1, h2, h3, h4].forEach(function (h, j) { ov.setInt32(j * 4, h); });
        return out;
    }

    function hmacSha1(key, data) {
        if (key.length > 64) {
            key = sha1(key);
        }
        var ipad = new Uint8Array(64 + data.length), opad = new Uint8Array(64 + 20);
        for (var i = 0; i < 64; i++) {
            var kb = i < key.length ? key[i] : 0;
            ipad[i] = kb ^ 0x36;
            opad[i] = kb ^ 0x5c;
        }
        ipad.set(data, 64);
        opad.set(sha1(ipad), 64);
        return sha1(opad);
    }

    function pbkdf2Sha1(password, salt, iterations) {
        var block = new Uint8Array(salt.length + 4);
        block.set(salt);
        block[salt.length + 3] = 1;
        var u = hmacSha1(password, block);
        var out = u.slice();
        for (var i = 1; i < iterations; i++) {
            u = hmacSha1(password, u);
            for (var j = 0; j < 20; j++) {
                out[j] ^= u[j];
            }
        }
        return out;
    }

    var utf8 = function (text) { return new TextEncoder().encode(text); };

    function b64(data) {
        return root.Orbited.base64.encodeBytes(data);
    }

    function unb64(text) {
        return root.Orbited.base64.decodeBytes(text);
    }

    // RFC 5802 SCRAM-SHA-1 (no channel binding).  Username and password are used as given (no SASLprep).
    function ScramSha1(username, password, clientNonce) {
        var name = String(username).replace(/=/g, "=3D").replace(/,/g, "=2C");
        if (!clientNonce) {
            var raw = new Uint8Array(18);
            root.crypto.getRandomValues(raw);
            clientNonce = b64(raw);
        }
        var firstBare = "n=" + name + ",r=" + clientNonce;
        var serverSignature = null;
        var verified = false;      // the server-final-message came as a challenge, and was right
        this.mechanism = "SCRAM-SHA-1";
        this.initial = function () {
            return "n,," + firstBare;
        };
        this.challenge = function (serverFirst) {
            if (serverSignature !== null) {
                // RFC 3920 servers send the server-final-message as a second challenge (answered
                // with an empty response) and then an empty <success/>.
                if (!this.verify(serverFirst)) {
                    throw new Error("the server's SCRAM signature is wrong: not the real server");
                }
                verified = true;
                return "";
            }
            var attrs = {};
            serverFirst.split(",").forEach(function (part) {
                attrs[part.charAt(0)] = part.slice(2);
            });
            if (!attrs.r || attrs.r.indexOf(clientNonce) !== 0 || !attrs.s || !attrs.i) {
                throw new Error("bad SCRAM server-first-message");
            }
            var salted = pbkdf2Sha1(utf8(password), unb64(attrs.s), parseInt(attrs.i, 10));
            var clientKey = hmacSha1(salted, utf8("Client Key"));
            var storedKey = sha1(clientKey);
            var finalBare = "c=biws,r=" + attrs.r;
            var authMessage = utf8(firstBare + "," + serverFirst + "," + finalBare);
            var signature = hmacSha1(storedKey, authMessage);
            var proof = new Uint8Array(20);
            for (var i = 0; i < 20; i++) {
                proof[i] = clientKey[i] ^ signature[i];
            }
            serverSignature = b64(hmacSha1(hmacSha1(salted, utf8("Server Key")), authMessage));
            return finalBare + ",p=" + b64(proof);
        };
        this.verify = function (serverFinal) {
            return serverSignature !== null && (serverFinal === "v=" + serverSignature || (verified && !serverFinal));
        };
    }

    function SaslPlain(username, password) {
        this.mechanism = "PLAIN";
        this.initial = function () {
            return "\u0000" + username + "\u0000" + password;
        };
        this.challenge = function () {
            throw new Error("PLAIN takes no challenge");
        };
        this.verify = function () {
            return true;
        };
    }

    // --- splitting the XML stream into stanzas

    // Feed text; get back {open: attrs} when the stream header arrives, each
    // complete top-level element as a string, and {close: true} at </stream:stream>.
    function StanzaSplitter(maxStanza) {
        this.maxStanza = maxStanza || 1024 * 1024;
        this.reset();
    }
    StanzaSplitter.prototype.reset = function () {
        this.buffer = "";
        this.pos = 0;        // where scanning resumes
        this.depth = 0;      // 0 outside the stream, 1 between stanzas
        this.start = -1;     // where the current stanza began
    };
    StanzaSplitter.prototype.feed = function (text) {
        var out = [];
        var buf = this.buffer += text;
        var pos = this.pos;
        for (;;) {
            var lt = buf.indexOf("<", pos);
            if (lt < 0) {
                pos = buf.length;
                break;
            }
            if (buf.startsWith("<?", lt)) {
                var pi = buf.indexOf("?>", lt);
                if (pi < 0) {
                    pos = lt;
                    break;
                }
                pos = pi + 2;
                continue;
            }
            if (buf.startsWith("<!--", lt)) {
                var comment = buf.indexOf("-->", lt);
                if (comment < 0) {
                    pos = lt;
                    break;
                }
                pos = comment + 3;
                continue;
            }
            if (buf.startsWith("<![CDATA[", lt)) {
                var cdata = buf.indexOf("]]>", lt);
                if (cdata < 0) {
                    pos = lt;
                    break;
                }
                pos = cdata + 3;
                continue;
            }
            // find the end of the tag, skipping quoted attribute values
            var i = lt + 1, quote = null;
            for (; i < buf.length; i++) {
                var c = buf.charAt(i);
                if (quote) {
                    if (c === quote) {
                        quote = null;
                    }
                } else if (c === "\"" || c === "'") {
                    quote = c;
                } else if (c === ">") {
                    break;
                }
            }
            if (i >= buf.length) {
                pos = lt;
                break;
            }
            var tag = buf.slice(lt, i + 1);
            pos = i + 1;
            if (tag.charAt(1) === "/") {
                this.depth -= 1;
                if (this.depth === 1 && this.start >= 0) {
                    out.push(buf.slice(this.start, pos));
                    this.start = -1;
                } else if (this.depth <= 0) {
                    out.push({close: true});
                    this.depth = 0;
                }
            } else if (this.depth === 0) {
                out.push({open: parseAttributes(tag)});
                this.depth = 1;
            } else if (tag.charAt(tag.length - 2) === "/") {
                if (this.depth === 1) {
                    out.push(tag);
                }
            } else {
                if (this.depth === 1) {
                    this.start = lt;
                }
                this.depth += 1;
            }
        }
        // keep only what an unfinished stanza (or tag) still needs
        var keep = this.start >= 0 ? this.start : Math.min(pos, buf.length);
        if (this.start >= 0) {
            this.start -= keep;
        }
        this.buffer = buf.slice(keep);
        this.pos = pos - keep;
        if (this.buffer.length > this.maxStanza) {
            throw new Error("XMPP stanza larger than " + this.maxStanza + " characters");
        }
        return out;
    };

    function parseAttributes(tag) {
        var attrs = {};
        var re = /([^\s=<>\/]+)\s*=\s*("([^"]*)"|'([^']*)')/g;
        var m;
        while ((m = re.exec(tag)) !== null) {
            attrs[m[1]] = m[3] !== undefined ? m[3] : m[4];
        }
        return attrs;
    }

    var domParser = null;

    // The namespace declarations of a stream header ({open: attrs} from StanzaSplitter), as
    // attribute text: the stanzas of that stream may use any of them.  The streams namespace's
    // prefix is the server's choice ("stream" only by convention), and so is any other prefix.
    function namespaceDeclarations(header) {
        var decls = {"xmlns": NS.client, "xmlns:stream": NS.stream};
        for (var name in header || {}) {
            if (name === "xmlns" || name.indexOf("xmlns:") === 0) {
                decls[name] = header[name];
            }
        }
        return Object.keys(decls).map(function (name) {
            return " " + name + "=\"" + decls[name].replace(/"/g, "&quot;") + "\"";
        }).join("");
    }

    // One stanza string -> its DOM element, with the namespaces its stream header declared
    // (jabber:client by default).
    function parseStanza(text, declarations) {
        domParser = domParser || new root.DOMParser();
        var doc = domParser.parseFromString(
            "<stream" + (declarations || namespaceDeclarations(null)) + ">" + text + "</stream>", "text/xml");
        var error = doc.getElementsByTagName("parsererror");
        if (error.length) {
            throw new Error("malformed XML stanza: " + text.slice(0, 200));
        }
        return doc.documentElement.firstElementChild;
    }

    function child(node, name, ns) {
        for (var c = node.firstElementChild; c; c = c.nextElementSibling) {
            if (c.localName === name && (!ns || c.namespaceURI === ns)) {
                return c;
            }
        }
        return null;
    }

    function childText(node, name, ns) {
        var c = child(node, name, ns);
        return c ? c.textContent : null;
    }

    function bare(jid) {
        jid = String(jid || "");
        var slash = jid.indexOf("/");
        return slash < 0 ? jid : jid.slice(0, slash);
    }

    function resourceOf(jid) {
        jid = String(jid || "");
        var slash = jid.indexOf("/");
        return slash < 0 ? "" : jid.slice(slash + 1);
    }

    function Ignored() {}

    // TCPSocket close codes (Orbited.Errors, Orbited.Statuses), for a page that brought its own socket.
    var USER_CONNECTION_RESET = 103, SERVER_CLOSED_CONNECTION = 201;

    function XMPPClient() {
        var self = this;
        var conn = null;
        var splitter = new StanzaSplitter();
        var domain = null;
        var user = null;
        var features = null;
        var streamWaiter = null;   // fn(features) once the next <stream:features> arrives
        var iqHandlers = {};
        var idCounter = 0;
        var rooms = {};            // room bare JID -> nick
        var joining = {};          // room bare JID -> {tries, show, status} until the room confirms
        var closingSent = false;   // our </stream:stream> went out
        var endedByServer = null;  // the socket whose stream the server ended (its </stream:stream> or a stream error)
        var declarations = null;   // the namespace declarations of the server's stream header

        self.jid = null;           // full JID once bound
        self.roster = {};          // bare JID -> {jid, name, subscription, groups}
        self.resource = "Orbited";
        self.mechanisms = ["SCRAM-SHA-1", "PLAIN"];  // in order of preference
        self.autoConfigureRooms = true;              // accept default config for rooms we create

        self.onPresence = function (type, from, to, show, status) {};
        self.onMessage = function (from, from_, body, stamp) {};
        self.onGroupchat = null;   // function (room, nick, body, stamp); null: room messages go to onMessage
        self.onRoomJoined = Ignored;
        self.onRoomError = Ignored;  // function (room, condition): a join the room refused
        self.onRoster = Ignored;
        self.onSocketConnect = Ignored;
        self.onUnknownNode = Ignored;
        self.onclose = Ignored;
        self.onerror = Ignored;

        function nextId() {
            idCounter += 1;
            return "orbited" + idCounter;
        }

        self._createTransport = function () {
            var Socket = self.transport || root.TCPSocket || root.Orbited.TCPSocket;
            return new Socket();
        };

        // Open the socket; onSocketConnect() fires when it is open.  Connecting again starts a
        // new stream from nothing: a connection still open is closed (its onclose follows), and
        // nothing of the old one (its close, its rooms, its pending requests) reaches the new one.
        self.connect = function (host, port) {
            if (conn) {
                conn.close();
            }
            splitter.reset();
            declarations = null;
            closingSent = false;
            features = streamWaiter = self._sasl = null;
            iqHandlers = {};
            rooms = {};
            joining = {};
            var c = conn = self._createTransport();
            conn.onopen = function () { self.onSocketConnect(); };
            conn.onclose = function (code) {
                if (conn === c) {
                    conn = null;
                }
                // We hang up the socket once the server has ended the stream, but it is the
                // server that closed the session: the page hears 201, not its own 103.
                self.onclose(endedByServer === c && code === USER_CONNECTION_RESET ? SERVER_CLOSED_CONNECTION : code);
            };
            conn.onread = function (text) {
                var items;
                try {
                    items = splitter.feed(text);
                } catch (e) {
                    fatal(e.message);
                    return;
                }
                for (var i = 0; i < items.length && conn; i++) {
                    // a page handler that throws must not cost the stanzas after it in this read
                    try {
                        handleItem(items[i]);
                    } catch (e) {
                        root.setTimeout(function () { throw e; }, 0);
                    }
                }
            };
            conn.open(host, port, false);
        };

        // End the stream as RFC 6120 4.4 asks (our closing tag, then the socket) and tell the
        // page why.  The socket goes first, so that an onerror that throws cannot keep it open.
        function fatal(why) {
            hangUp();
            try {
                self.onerror(why);
            } catch (e) {
                root.setTimeout(function () { throw e; }, 0);
            }
        }

        function isOpen() {
            return typeof conn.READY_STATE_OPEN !== "number" || conn.readyState === conn.READY_STATE_OPEN;
        }

        function hangUp() {
            if (!conn) {
                return;
            }
            if (isOpen() && !closingSent) {
                closingSent = true;
                conn.send("</stream:stream>");
            }
            conn.close();
        }

        // Send raw XML (already escaped).
        self.send = function (xml) {
            if (!conn) {
                throw new Error("XMPPClient is not connected");
            }
            conn.send(xml);
        };

        function openStream(next) {
            streamWaiter = next;
            splitter.reset();
            self.send("<?xml version='1.0'?><stream:stream to='" + escapeXml(domain) +
                      "' xmlns='" + NS.client + "' xmlns:stream='" + NS.stream + "' version='1.0'>");
        }

        function iq(type, to, inner, onResult, onError) {
            var id = nextId();
            iqHandlers[id] = {result: onResult || Ignored, error: onError || Ignored};
            self.send("<iq type='" + type + "' id='" + id + "'" + (to ? " to='" + escapeXml(to) + "'" : "") +
                      ">" + inner + "</iq>");
            return id;
        }

        // Open the XML stream to `domain`; success() once the server offers its features.
        self.connectServer = function (d, success, failure) {
            domain = d;
            self._connectFailure = failure || Ignored;
            openStream(function () {
                self._connectFailure = Ignored;
                (success || Ignored)();
            });
        };

        // SASL login, resource binding, roster, initial presence; then success().
        self.login = function (nick, pass, success, failure) {
            success = success || Ignored;
            failure = failure || Ignored;
            user = nick;
            var offered = [];
            var mechs = features && child(features, "mechanisms", NS.sasl);
            if (mechs) {
                for (var m = mechs.firstElementChild; m; m = m.nextElementSibling) {
                    offered.push(m.textContent);
                }
            }
            var pick = null;
            for (var i = 0; i < self.mechanisms.length && !pick; i++) {
                if (offered.indexOf(self.mechanisms[i]) >= 0) {
                    pick = self.mechanisms[i];
                }
            }
            if (!pick) {
                // a server that wants TLS first offers no mechanism (or none but EXTERNAL) before it
                var tls = features && child(features, "starttls", NS.tls);
                failure(tls && (!offered.length || child(tls, "required", NS.tls)) ?
                        "the server requires STARTTLS, which XMPPClient does not do (see docs/client.md)" :
                        "no usable SASL mechanism (server offers: " + offered.join(", ") + ")");
                return;
            }
            var sasl = pick === "PLAIN" ? new SaslPlain(nick, pass) : new ScramSha1(nick, pass);
            self._sasl = {
                mech: sasl,
                success: function () {
                    openStream(function () { bind(success, failure); });
                },
                failure: failure
            };
            self.send("<auth xmlns='" + NS.sasl + "' mechanism='" + pick + "'>" +
                      b64(utf8(sasl.initial())) + "</auth>");
        };

        function bind(success, failure) {
            var resource = "<resource>" + escapeXml(self.resource) + "</resource>";
            iq("set", null, "<bind xmlns='" + NS.bind + "'>" + resource + "</bind>", function (node) {
                var bound = child(node, "bind", NS.bind);
                self.jid = bound ? childText(bound, "jid", NS.bind) : user + "@" + domain + "/" + self.resource;
                var afterSession = function () {
                    self.getRoster(function () {
                        self.send("<presence/>");
                        success();
                    });
                };
                var session = features && child(features, "session", NS.session);
                if (session && !child(session, "optional", NS.session)) {
                    iq("set", null, "<session xmlns='" + NS.session + "'/>", afterSession,
                       function () { failure("session refused"); });
                } else {
                    afterSession();
                }
            }, function () {
                failure("resource binding refused");
            });
        }

        // In-band registration (XEP-0077), for servers that allow it.
        self.register = function (nick, pass, success, failure) {
            iq("set", null, "<query xmlns='" + NS.register + "'><username>" + escapeXml(nick) +
               "</username><password>" + escapeXml(pass) + "</password></query>",
               function () { (success || Ignored)(); },
               function (node) { (failure || Ignored)(errorCondition(node)); });
        };

        self.getRoster = function (done) {
            iq("get", null, "<query xmlns='" + NS.roster + "'/>", function (node) {
                updateRoster(child(node, "query", NS.roster));
                (done || Ignored)(self.roster);
            }, function () {
                (done || Ignored)(self.roster);
            });
        };

        function updateRoster(query) {
            if (!query) {
                return;
            }
            for (var item = query.firstElementChild; item; item = item.nextElementSibling) {
                var jid = item.getAttribute("jid");
                if (item.getAttribute("subscription") === "remove") {
                    delete self.roster[jid];
                    continue;
                }
                var groups = [];
                for (var g = item.firstElementChild; g; g = g.nextElementSibling) {
                    if (g.localName === "group") {
                        groups.push(g.textContent);
                    }
                }
                self.roster[jid] = {jid: jid, name: item.getAttribute("name"),
                                    subscription: item.getAttribute("subscription") || "none",
                                    ask: item.getAttribute("ask"), groups: groups};
            }
            self.onRoster(self.roster);
        }

        function errorCondition(node) {
            var error = child(node, "error");
            if (!error) {
                return "error";
            }
            for (var c = error.firstElementChild; c; c = c.nextElementSibling) {
                if (c.namespaceURI === NS.stanzas && c.localName !== "text") {
                    return c.localName;
                }
            }
            return "error";
        }

        // --- chat, presence, subscriptions

        self.msg = function (to, body) {
            self.send("<message to='" + escapeXml(to) + "' type='chat' id='" + nextId() + "'><body>" +
                      escapeXml(body) + "</body></message>");
        };

        function presence(to, type, show, status) {
            var attrs = (to ? " to='" + escapeXml(to) + "'" : "") + (type ? " type='" + escapeXml(type) + "'" : "");
            var inner = (show ? "<show>" + escapeXml(show) + "</show>" : "") +
                (status ? "<status>" + escapeXml(status) + "</status>" : "");
            self.send("<presence" + attrs + (inner ? ">" + inner + "</presence>" : "/>"));
        }

        self.subscribe = function (jid) {
            presence(bare(jid), "subscribe");
        };
        self.unsubscribe = function (jid) {
            presence(bare(jid), "unsubscribe");
        };
        self.sendSubscribed = function (jid) {
            presence(bare(jid), "subscribed");
        };
        // Our presence to contacts and to every joined room.  show: away, chat, dnd, xa or "".
        self.set_presence = function (show, status) {
            presence(null, null, show, status);
            for (var room in rooms) {
                presence(room + "/" + rooms[room], null, show, status);
            }
        };
        // Before the socket is open (or once it has closed) there is no stream to end: the socket
        // just closes, and quit() never throws.
        self.quit = function () {
            if (!conn) {
                return;
            }
            if (!isOpen()) {
                conn.close();
            } else if (!closingSent) {
                presence(null, "unavailable");
                closingSent = true;
                self.send("</stream:stream>");
            }
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

        // --- multi-user chat (XEP-0045)

        // join_room("room@conference.example.com"[, show, status, nick]): nick defaults to the user name.
        self.join_room = function (room, show, status, nick) {
            room = bare(room);
            rooms[room] = nick || user;
            joining[room] = {tries: 0, show: show, status: status};
            self._lastRoom = room;
            sendJoin(room);
        };
        function sendJoin(room) {
            var j = joining[room];
            var inner = "<x xmlns='" + NS.muc + "'/>" + (j.show ? "<show>" + escapeXml(j.show) + "</show>" : "") +
                (j.status ? "<status>" + escapeXml(j.status) + "</status>" : "");
            self.send("<presence to='" + escapeXml(room + "/" + rooms[room]) + "'>" + inner + "</presence>");
        }
        self.leave_room = function (room) {
            room = bare(room || self._lastRoom);
            if (rooms[room]) {
                presence(room + "/" + rooms[room], "unavailable");
                delete rooms[room];
            }
        };
        self.groupchat_msg = function (content, room) {
            room = bare(room || self._lastRoom);
            self.send("<message to='" + escapeXml(room) + "' type='groupchat' id='" + nextId() + "'><body>" +
                      escapeXml(content) + "</body></message>");
        };

        // --- incoming

        function handleItem(item) {
            if (typeof item !== "string") {
                if (item.open) {
                    declarations = namespaceDeclarations(item.open);
                }
                if (item.close) {
                    endedByServer = conn;
                    hangUp();
                }
                return;
            }
            var node;
            try {
                node = parseStanza(item, declarations);
            } catch (e) {
                fatal(e.message);
                return;
            }
            if (!node) {
                return;
            }
            var name = node.localName;
            if (node.namespaceURI === NS.stream && name === "features") {
                features = node;
                var waiter = streamWaiter;
                streamWaiter = null;
                if (waiter) {
                    waiter(node);
                }
            } else if (node.namespaceURI === NS.stream && name === "error") {
                var condition = node.firstElementChild ? node.firstElementChild.localName : "error";
                // any stream error before the features (host-unknown, see-other-host,
                // policy-violation, system-shutdown...) is connectServer's failure
                var connectFailure = self._connectFailure;
                self._connectFailure = Ignored;
                if (connectFailure) {
                    connectFailure(condition);
                }
                endedByServer = conn;
                fatal("stream error: " + condition);
            } else if (node.namespaceURI === NS.sasl) {
                handleSasl(node);
            } else if (name === "iq") {
                handleIq(node);
            } else if (name === "message") {
                handleMessage(node);
            } else if (name === "presence") {
                handlePresence(node);
            } else {
                self.onUnknownNode(node);
            }
        }

        function handleSasl(node) {
            var state = self._sasl;
            if (!state) {
                return;
            }
            try {
                if (node.localName === "challenge") {
                    var reply = state.mech.challenge(new TextDecoder().decode(unb64(node.textContent)));
                    self.send("<response xmlns='" + NS.sasl + "'>" + b64(utf8(reply)) + "</response>");
                } else if (node.localName === "success") {
                    var extra = node.textContent ? new TextDecoder().decode(unb64(node.textContent)) : "";
                    if (state.mech.mechanism !== "PLAIN" && !state.mech.verify(extra)) {
                        throw new Error("the server's SCRAM signature is wrong: not the real server");
                    }
                    self._sasl = null;
                    state.success();
                } else if (node.localName === "failure") {
                    self._sasl = null;
                    var why = node.firstElementChild ? node.firstElementChild.localName : "failure";
                    state.failure(why);
                }
            } catch (e) {
                self._sasl = null;
                state.failure(e.message);
                fatal(e.message);
            }
        }

        function handleIq(node) {
            var type = node.getAttribute("type");
            var id = node.getAttribute("id");
            if (type === "result" || type === "error") {
                var handler = iqHandlers[id];
                if (handler) {
                    delete iqHandlers[id];
                    handler[type](node);
                }
                return;
            }
            var query = node.firstElementChild;
            var from = node.getAttribute("from");
            var reply = "<iq type='result' id='" + escapeXml(id) + "'" +
                (from ? " to='" + escapeXml(from) + "'" : "");
            if (type === "set" && query && query.namespaceURI === NS.roster &&
                (!from || bare(from) === bare(self.jid))) {
                updateRoster(query);
                self.send(reply + "/>");
            } else if (type === "get" && query && query.namespaceURI === NS.ping) {
                self.send(reply + "/>");
            } else {
                self.send("<iq type='error' id='" + escapeXml(id) + "'" + (from ? " to='" + escapeXml(from) + "'" : "") +
                          "><error type='cancel'><service-unavailable xmlns='" + NS.stanzas +
                          "'/></error></iq>");
                self.onUnknownNode(node);
            }
        }

        function stampOf(node) {
            var delay = child(node, "delay", NS.delay) || child(node, "x", "jabber:x:delay");
            return delay ? delay.getAttribute("stamp") : null;
        }

        function handleMessage(node) {
            var from = node.getAttribute("from");
            var body = childText(node, "body");
            var type = node.getAttribute("type");
            if (body === null) {
                self.onUnknownNode(node);
                return;
            }
            if (type === "groupchat" && typeof self.onGroupchat === "function") {
                self.onGroupchat(bare(from), resourceOf(from), body, stampOf(node));
                return;
            }
            if (type === "error") {
                self.onerror("message error from " + from + ": " + errorCondition(node));
                return;
            }
            self.onMessage(from, from, body, stampOf(node));
        }

        function handlePresence(node) {
            var from = node.getAttribute("from");
            var room = bare(from);
            if (node.getAttribute("type") === "error" && rooms[room] !== undefined && joining[room]) {
                // A room someone else is just creating stays locked until its owner
                // configures it (item-not-found): try again a few times.
                var condition = errorCondition(node);
                if (condition === "item-not-found" && joining[room].tries < 8) {
                    joining[room].tries += 1;
                    root.setTimeout(function () { if (conn && joining[room]) { sendJoin(room); } }, 250);
                } else {
                    delete joining[room];
                    delete rooms[room];
                    self.onRoomError(room, condition);
                }
                return;
            }
            var mucUser = child(node, "x", NS.mucUser);
            if (mucUser && rooms[room] !== undefined) {
                var codes = [];
                for (var s = mucUser.firstElementChild; s; s = s.nextElementSibling) {
                    if (s.localName === "status") {
                        codes.push(s.getAttribute("code"));
                    }
                }
                if (codes.indexOf("110") >= 0 && node.getAttribute("type") !== "unavailable") {
                    delete joining[room];
                    if (codes.indexOf("201") >= 0 && self.autoConfigureRooms) {
                        // we created the room: accept the default configuration so others can join
                        iq("set", room, "<query xmlns='" + NS.mucOwner + "'><x xmlns='" + NS.data +
                           "' type='submit'/></query>", function () { self.onRoomJoined(room, resourceOf(from)); },
                           function () { self.onRoomJoined(room, resourceOf(from)); });
                    } else {
                        self.onRoomJoined(room, resourceOf(from));
                    }
                }
            }
            self.onPresence(node.getAttribute("type"), from, node.getAttribute("to"),
                            childText(node, "show"), childText(node, "status"));
        }
    }

    XMPPClient.NS = NS;
    XMPPClient.escapeXml = escapeXml;
    XMPPClient.StanzaSplitter = StanzaSplitter;
    XMPPClient.ScramSha1 = ScramSha1;
    XMPPClient.sha1 = sha1;
    XMPPClient.hmacSha1 = hmacSha1;
    XMPPClient.pbkdf2Sha1 = pbkdf2Sha1;
    root.XMPPClient = XMPPClient;
})(typeof window !== "undefined" ? window : this);
