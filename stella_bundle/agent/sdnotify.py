"""systemd's notification protocol (sd_notify(3)): READY, WATCHDOG, STOPPING, STATUS.

One datagram to the socket named by $NOTIFY_SOCKET (a path, or `@name` in the abstract
namespace); written here rather than linking libsystemd, which is not on every host the agent
runs on. Without $NOTIFY_SOCKET (not under systemd, or Type= is not notify) nothing is sent.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Final

ENV: Final = "NOTIFY_SOCKET"


class Notifier:
    """Sends to systemd when run under a Type=notify unit; silent otherwise."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get(ENV)
        self._address: str | None = None
        if address and (address.startswith(("/", "@"))):
            # '@' is the abstract namespace, spelt with a leading NUL byte on the socket.
            self._address = "\0" + address[1:] if address.startswith("@") else address
        # Watchdog pings at half the interval systemd set (WATCHDOG_USEC), as sd_watchdog_enabled
        # advises; the loop turns far more often, so most turns send nothing.
        usec = os.environ.get("WATCHDOG_USEC", "")
        self._watchdog_every = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else 0.0
        self._last_watchdog = 0.0

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> None:
        if self._address is None:
            return
        # systemd gone or its socket replaced: the service goes on regardless.
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
            contextlib.suppress(OSError),
        ):
            sock.sendto("\n".join(fields).encode(), self._address)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def watchdog(self) -> None:
        now = time.monotonic()
        if self._watchdog_every and now - self._last_watchdog >= self._watchdog_every:
            self._last_watchdog = now
            self.send("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")
