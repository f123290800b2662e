"""sd_notify without systemd: the datagrams a Type=notify unit expects, to a path or an abstract
socket; nothing at all without $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from stella_bundle.agent.sdnotify import Notifier


def test_abstract_socket_and_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"stella-notify-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(5)
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        notifier = Notifier(f"@{name}")
        notifier.ready("collecting")
        assert listener.recv(4096) == b"READY=1\nSTATUS=collecting"
        notifier.watchdog()  # no WATCHDOG_USEC: systemd asked for no watchdog
        notifier.stopping("sealing")
        assert listener.recv(4096) == b"STOPPING=1\nSTATUS=sealing"


def test_silent_outside_systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().enabled
    Notifier().ready("nobody listens")  # no error either
    gone = Notifier(str(tmp_path / "no-such-socket"))
    assert gone.enabled
    gone.ready("systemd went away")  # refused send: the service goes on
