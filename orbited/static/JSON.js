/* Orbited 0.7 compatibility: JSON for the cross-subdomain bridge page.
 *
 * 0.7's xsdrBridge.html loaded a private JSON library.  Every browser that
 * can still run those pages has a native JSON object, so this file only
 * fills JSON.stringify / JSON.parse in where they are missing, with a
 * validating parser (no eval of anything that is not JSON).
 */
(function (global) {
    if (global.JSON && global.JSON.parse && global.JSON.stringify) { return; }
    var escapes = { '"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t" };
    function quote(text) {
        return '"' + text.replace(/[\\"\u0000-\u001f\u2028\u2029]/g, function (c) {
            return escapes[c] || "\\u" + ("0000" + c.charCodeAt(0).toString(16)).slice(-4);
        }) + '"';
    }
    function stringify(value) {
        if (value === null || value === undefined) { return "null"; }
        switch (typeof value) {
        case "string": return quote(value);
        case "number": return isFinite(value) ? String(value) : "null";
        case "boolean": return String(value);
        }
        var out = [], key;
        if (Object.prototype.toString.call(value) === "[object Array]") {
            for (var i = 0; i < value.length; i++) { out.push(stringify(value[i])); }
            return "[" + out.join(",") + "]";
        }
        for (key in value) {
            if (Object.prototype.hasOwnProperty.call(value, key) && typeof value[key] !== "function") {
                out.push(quote(key) + ":" + stringify(value[key]));
            }
        }
        return "{" + out.join(",") + "}";
    }
    function parse(text) {
        /* Only JSON tokens may remain once strings, numbers and literals are reduced. */
        var reduced = String(text)
            .replace(/\\(?:["\\\/bfnrt]|u[0-9a-fA-F]{4})/g, "@")
            .replace(/"[^"\\\n\r]*"|true|false|null|-?\d+(?:\.\d*)?(?:[eE][+\-]?\d+)?/g, "]")
            .replace(/(?:^|:|,)(?:\s*\[)+/g, "");
        if (!/^[\],:{}\s]*$/.test(reduced)) { throw new SyntaxError("JSON.parse: not JSON"); }
        return (new Function("return (" + text + ");"))();
    }
    global.JSON = global.JSON || {};
    global.JSON.stringify = global.JSON.stringify || stringify;
    global.JSON.parse = global.JSON.parse || parse;
})(this);
