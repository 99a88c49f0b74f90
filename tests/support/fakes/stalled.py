"""A server that stalls: it accepts TCP connections on 127.0.0.1, reads what it is sent and never answers.

It stands for a Redis that hangs (a full disk, a paused VM, a network partition that drops packets):
every call to it lasts until the client's own timeout.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class StalledServer:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._connections: list[socket.socket] = []
        self._stop = threading.Event()
        #: set when the first bytes arrived (a client is now waiting for an answer that never comes)
        self.asked = threading.Event()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"

    def __enter__(self) -> StalledServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                self.asked.set()
        except OSError:
            pass

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._listener.close()
        for conn in self._connections:
            conn.close()
