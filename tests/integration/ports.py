"""Free local ports for the apps the integration tests start."""
from __future__ import annotations

import contextlib
import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_range(count: int, first: int = 45000, last: int = 49999) -> tuple[int, int]:
    """`count` consecutive ports, all free now on every interface: a range an app's servers bind in."""
    for base in range(first, last - count + 2, count):
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("", port))
            return base, base + count - 1
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports in {first}-{last}")
