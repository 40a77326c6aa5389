"""Session-wide real peers, started on first use and stopped at the end."""

from __future__ import annotations

import pytest

from tests.support import peers


@pytest.fixture(scope="session")
def ngircd():
    peer = peers.start_ngircd()
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def prosody():
    peer = peers.start_prosody({"alice": "alicepw", "bob": "bobpw"})
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def rabbitmq():
    peer = peers.start_rabbitmq()
    yield peer
    peers.stop_rabbitmq(peer)


@pytest.fixture
def browser():
    from tests.support.browser import Browser

    with Browser() as chromium:
        yield chromium
