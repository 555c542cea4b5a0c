"""The test Dovecot picks its own ports; one taken by another process before Dovecot binds it is picked again
(xdist workers start Dovecots side by side: a port free when picked can be gone a moment later)."""

from __future__ import annotations

import socket

import pytest

from sandbox.dovecot import DovecotServer

pytestmark = pytest.mark.dovecot


def test_a_port_taken_before_dovecot_binds_it_is_picked_again(sandbox):
    server = DovecotServer(introspection_url=sandbox.microsoft_introspection_url, tls=sandbox.tls)
    taken = server.submission_port
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            server.start()
            assert server.submission_port != taken
            with socket.create_connection(("127.0.0.1", server.imap_port), timeout=5) as imap:
                assert imap.recv(100).startswith(b"* OK")
        finally:
            server.stop()
