"""The access policy and the handshake parser, as pure functions."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orbited.access import AccessPolicy, host_of, normalise_origin
from orbited.config import AccessRule, load_text
from orbited.proxy import Destination, HandshakeError, parse_destination


def policy(text: str = "", origins: str = "") -> AccessPolicy:
    return AccessPolicy.from_config(load_text(f"[global]\norigins = {origins}\n[access]\n{text}", "t.cfg"))


def test_deny_by_default():
    assert not policy().destination_allowed("localhost:8000", "localhost", 61613)


def test_wildcard_source_and_exact_destination():
    p = policy("* -> localhost:61613")
    assert p.destination_allowed("anything", "localhost", 61613)
    assert p.destination_allowed(None, "LOCALHOST", 61613)
    assert not p.destination_allowed("anything", "localhost", 61614)
    assert not p.destination_allowed("anything", "127.0.0.1", 61613)  # literal, as in 0.7


def test_source_is_the_host_header():
    p = policy("www.example.com:8000 -> irc.example.com:6667")
    assert p.destination_allowed("WWW.example.com:8000", "irc.example.com", 6667)
    assert not p.destination_allowed("www.example.com", "irc.example.com", 6667)
    assert not p.destination_allowed("evil.example", "irc.example.com", 6667)


def test_default_port_is_80_and_ipv6_rules():
    p = policy("* -> web.example\n* -> [::1]:6667")
    assert p.destination_allowed("h", "web.example", 80)
    assert p.destination_allowed("h", "::1", 6667)
    assert p.rules[1] == AccessRule("*", "::1", 6667, 5)


@pytest.mark.parametrize("rule, handshake", [
    ("[::1]:6667", b"[0:0::1]:6667"),
    ("[::1]:6667", b"[0000:0000:0000:0000:0000:0000:0000:0001]:6667"),
    ("[::ffff:127.0.0.1]:6667", b"[::ffff:7f00:1]:6667"),
    ("[0:0::1]:6667", b"[::1]:6667"),
])
def test_an_ip_literal_matches_in_any_of_its_spellings(rule, handshake):
    """Compared as text, the same address written another way was refused (0106)."""
    dest = parse_destination(handshake)
    assert policy(f"* -> {rule}").destination_allowed("h", dest.host, dest.port)
    assert not policy("* -> [::2]:6667").destination_allowed("h", dest.host, dest.port)


@pytest.mark.parametrize("written, sent", [
    ("[0:0:0:0:0:0:0:1]", "[::1]"),
    ("[::FFFF:127.0.0.1]", "[::ffff:7f00:1]"),  # what Chromium sends for a page on http://[::ffff:127.0.0.1]
    ("[0::1]", "[::1]"),
])
def test_ipv6_origins_and_sources_match_the_form_browsers_send(written, sent):
    """Browsers write an IPv6 host in its one compressed form (the URL standard's) in Origin and
    Host.  [access] destinations matched any spelling; `origins` entries and rule SOURCEs were
    compared as text, so a page listed as http://[::FFFF:127.0.0.1]:3000 was refused (0106)."""
    listed = policy(origins=f"http://{written}:3000")
    assert listed.origin_allowed(f"http://{sent}:3000", "orbited.example:8000")
    assert not listed.origin_allowed(f"http://{sent}:3001", "orbited.example:8000")
    assert policy().origin_allowed(f"http://{sent}:3000", f"{written}:8000")  # the same-host rule
    sourced = policy(f"{written}:8000 -> 127.0.0.1:7")
    assert sourced.destination_allowed(f"{sent}:8000", "127.0.0.1", 7)
    assert not sourced.destination_allowed(f"{sent}:8001", "127.0.0.1", 7)
    assert not sourced.destination_allowed("[::2]:8000", "127.0.0.1", 7)


@pytest.mark.parametrize("origin, host, allowed", [
    (None, "localhost:8000", True),
    ("http://localhost:3000", "localhost:8000", True),
    ("https://LOCALHOST", "localhost:8000", True),
    ("http://evil.example", "localhost:8000", False),
    ("http://localhost.evil.example", "localhost:8000", False),
    ("null", "localhost:8000", False),
    ("garbage", "localhost:8000", False),
    ("http://[::1]:3000", "[::1]:8000", True),
])
def test_same_host_origin_rule(origin, host, allowed):
    assert policy().origin_allowed(origin, host) is allowed


def test_listed_and_any_origins():
    listed = policy(origins="https://app.example:8443 http://other.example")
    assert listed.origin_allowed("https://app.example:8443", "orbited.example")
    assert listed.origin_allowed("http://other.example:80", "orbited.example")
    assert not listed.origin_allowed("http://app.example:8443", "orbited.example")
    assert not listed.any_origin
    anyone = policy(origins="*")
    assert anyone.origin_allowed("http://evil.example", "x") and anyone.any_origin


@pytest.mark.parametrize(("origins", "page", "allowed"), [
    ("", "http://orbited.example:3000/app/index.html", True),  # a Referer: a URL, path and all
    ("", "http://evil.example/attack.html", False),
    ("", None, False),  # no Origin, no Referer: the page cannot be checked
    ("", "null", False),
    ("https://app.example", "https://app.example/chat?room=1", True),
    ("https://app.example", "https://evil.example/", False),
    ("https://app.example", None, False),
    ("*", None, True),
    ("*", "http://evil.example/", True),
])
def test_pages_of_requests_without_an_origin_header(origins, page, allowed):
    assert policy(origins=origins).page_allowed(page, "orbited.example:8000") is allowed


def test_origin_helpers():
    assert normalise_origin("HTTPS://Example.com:443") == "https://example.com"
    assert normalise_origin("http://example.com:8080/") == "http://example.com:8080"
    assert normalise_origin("null") is None
    assert host_of("Example.com:8000") == "example.com" and host_of("[::1]:80") == "::1"


@pytest.mark.parametrize("raw, expected", [
    (b"localhost:61613", Destination("localhost", 61613)),
    (b"localhost:61613\n", Destination("localhost", 61613)),
    (b"LocalHost:1\r\n", Destination("localhost", 1)),
    (b"[::1]:6667", Destination("::1", 6667)),
    (b"[FE80::1%eth0]:6667", Destination("fe80::1%eth0", 6667)),  # a link-local address names its link
    (b"10.0.0.1:65535", Destination("10.0.0.1", 65535)),
])
def test_handshake_parses(raw, expected):
    assert parse_destination(raw) == expected


@pytest.mark.parametrize("raw", [b"exa$mple:80", b"local host:80", b"*.example:80", b"a/b:80", b"::1:80"])
def test_a_host_with_characters_no_name_has_is_an_invalid_handshake(raw):
    with pytest.raises(HandshakeError):
        parse_destination(raw)


@pytest.mark.parametrize("raw, why", [
    (b"[::1%lo]:80", "a zone id (%lo) belongs to a link-local address (fe80::/10) only"),
    (b"[fe80::1%a b]:80", "'a b' is not an interface name"),
    (b"[fe80::1%a\x1b[31m]:80", "is not an interface name"),
])
def test_a_zone_id_that_no_connect_could_use_is_an_invalid_handshake(raw, why):
    """It was taken as a host, then refused as unauthorized (0106) with a hint to add a rule that
    every connect would fail (getaddrinfo takes a zone on a link-local address only)."""
    with pytest.raises(HandshakeError, match=re.escape(why)):
        parse_destination(raw)


def test_a_host_with_characters_no_name_has_is_named_in_the_error():
    with pytest.raises(HandshakeError, match="'exa\\$mple' is not a host name \\(only letters, digits"):
        parse_destination(b"exa$mple:80")


@given(st.binary(max_size=700))
def test_handshake_parser_only_raises_its_own_error(data):
    try:
        dest = parse_destination(data)
    except HandshakeError:
        return
    assert 0 < dest.port < 65536 and dest.host


@given(st.from_regex(r"[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63}){0,2}\.?", fullmatch=True), st.integers(1, 65535))
def test_handshake_round_trip(host, port):
    assert parse_destination(f"{host}:{port}\n".encode()) == Destination(host, port)


@pytest.mark.parametrize("host", ["a" * 64 + ".example", "backend..example", ".example", ".",
                                  ".".join(["a" * 63] * 4)])
def test_a_name_no_lookup_could_take_is_an_invalid_handshake(host):
    """getaddrinfo's idna codec raises UnicodeError on these, not gaierror: refused before any lookup."""
    with pytest.raises(HandshakeError, match="is not a host name"):
        parse_destination(f"{host}:80".encode())
