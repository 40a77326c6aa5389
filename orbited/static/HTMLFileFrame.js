/* Orbited 0.7 compatibility: the script of the htmlfile streaming frame.
 *
 * Served for pages that still bundle the 0.7 Orbited.js and pick its
 * HTMLFile transport (Internet Explorer's ActiveX "htmlfile" document).
 * The /tcp/<key>/htmlfile response loads this file, then calls e(packets)
 * for every batch of packets and h() as a heartbeat.  The frame finds its
 * parent's Orbited (walking document.domain up when the page set it), hands
 * packets to the transport instance named by ?frameID=, and reopens the
 * stream with ?ack=<last id> when it ends or falls silent.
 *
 * Written for Orbited's modern server; modern pages use Orbited.js's
 * WebSocket or SockJS transports instead.
 */
(function () {
    var query = {};
    var pairs = location.search.replace(/^\?/, "").split("&");
    for (var i = 0; i < pairs.length; i++) {
        var kv = pairs[i].split("=");
        if (kv[0]) { query[decodeURIComponent(kv[0])] = decodeURIComponent(kv[1] || ""); }
    }
    var frameID = query.frameID;
    var reloads = parseInt(query.reload || "0", 10) || 0;
    var lastEventId = parseInt(query.ack || "0", 10) || 0;

    /* Reach parent.Orbited, relaxing document.domain one label at a time. */
    function findOrbited() {
        for (;;) {
            try {
                if (parent.Orbited) { return parent.Orbited; }
            } catch (denied) { }
            var dot = document.domain.indexOf(".");
            if (dot < 0) { return null; }
            try { document.domain = document.domain.slice(dot + 1); } catch (e) { return null; }
        }
    }

    var Orbited = findOrbited();
    var instance = Orbited && Orbited.singleton.HTMLFile.instances[frameID];
    if (!instance) { return; }
    var timeout = (Orbited.settings && Orbited.settings.HEARTBEAT_TIMEOUT) || 10000;
    var timer = null;
    var restarted = false;

    function restart() {
        if (restarted) { return; }
        restarted = true;
        window.clearTimeout(timer);
        var url = location.pathname + "?ack=" + lastEventId + "&frameID=" + frameID +
            "&reload=" + (reloads + 1);
        instance.restartingStream(url);
        location.replace(url);
    }

    function watch() {
        window.clearTimeout(timer);
        timer = window.setTimeout(restart, timeout);
    }

    window.e = function (packets) {
        watch();
        for (var i = 0; i < packets.length; i++) {
            var packet = packets[i];
            var id = parseInt(packet[0], 10);
            if (!isNaN(id) && id > lastEventId) { lastEventId = id; }
            instance.receive(id, packet[1], packet[2]);
        }
    };
    window.h = function () { watch(); };
    window.onload = restart;  /* the server ended the stream (1 MiB recycle) */

    instance.streamStarted();
    watch();
})();
