/* Orbited 0.7 compatibility: the page /tcp answers for an htmlfile stream
 * whose session no longer exists.  It tells the parent's HTMLFile transport
 * (named by ?frameID=) that the stream is closed, so the 0.7 client reports
 * the socket closed instead of reconnecting for ever.
 */
(function () {
    var match = /[?&]frameID=([^&]*)/.exec(location.search);
    var frameID = match ? decodeURIComponent(match[1]) : null;
    for (;;) {
        try {
            var instance = parent.Orbited.singleton.HTMLFile.instances[frameID];
            if (instance) { instance.streamClosed(); }
            return;
        } catch (denied) { }
        var dot = document.domain.indexOf(".");
        if (dot < 0) { return; }
        try { document.domain = document.domain.slice(dot + 1); } catch (e) { return; }
    }
})();
