"""The protocol over a real socket pair, read in recv()-sized pieces as an I/O shell would."""

from __future__ import annotations

import socket
import threading

from test_protocol_samples import HELLO, WELCOME

from protocol import (
    Accept,
    Bye,
    ByeReason,
    Connection,
    ConnectionState,
    Message,
    Offer,
    Progress,
    Result,
    Role,
)

PNG = bytes(range(256)) * 12_000  # ~3 MB: a dozen chunks


def read_until(sock: socket.socket, conn: Connection, count: int) -> list[Message]:
    """Receive until `count` messages have arrived, 64 KiB at a time."""
    received: list[Message] = []
    while len(received) < count:
        data = sock.recv(65536)
        received += conn.receive_data(data)
        if not data:
            break
    return received


def test_a_job_over_a_socket_pair() -> None:
    relay_sock, node_sock = socket.socketpair()
    relay_sock.settimeout(10)  # a broken node fails the test instead of hanging it
    node_sock.settimeout(10)
    relay, node = Connection(Role.RELAY), Connection(Role.NODE)
    offer = Offer("job-1", "lease-1", "fast", {"epochs": 2}, "mosaic", (), PNG[:500_000])
    answers: list[Message] = [
        Accept("job-1", "lease-1"),
        Progress("job-1", "lease-1", 1, 2, {"style": 0.5}, 0.1),
        Result.for_png("job-1", "lease-1", PNG, 640, 480),
        Bye(ByeReason.SHUTDOWN),
    ]
    node_saw: list[Message] = []

    def run_node() -> None:
        node_sock.sendall(node.send(HELLO))
        node_saw.extend(read_until(node_sock, node, 2))  # Welcome, Offer
        for message in answers:
            node_sock.sendall(node.send(message))
        node_sock.close()

    worker = threading.Thread(target=run_node)
    worker.start()
    with relay_sock:
        assert read_until(relay_sock, relay, 1) == [HELLO]
        relay_sock.sendall(relay.send(WELCOME) + relay.send(offer))
        assert read_until(relay_sock, relay, len(answers) + 1) == answers
    worker.join(timeout=10)
    assert node_saw == [WELCOME, offer]
    assert relay.state is ConnectionState.CLOSED
    assert relay.frames_received > len(answers) + 1 + len(PNG) // (256 * 1024)
