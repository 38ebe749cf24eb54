"""A loopback TCP proxy the test controls: forward to a broker, or cut every connection and refuse new ones."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading

__all__ = ["TcpProxy"]


def _owned_by(pid: int, local_port: int, remote_port: int) -> bool:
    """True when the loopback TCP socket from local_port to remote_port belongs to process pid (via /proc).

    The remote port matters: Linux hands out one ephemeral port to several connections with different
    destinations, so the local port alone may name another process's socket (the proxy's own upstream one)."""
    inode = None
    with contextlib.suppress(OSError), open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if (int(cols[1].split(":")[1], 16), int(cols[2].split(":")[1], 16)) == (local_port, remote_port):
                inode = cols[9]
                break
    if inode is None:
        return False
    target = f"socket:[{inode}]"
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            if os.readlink(f"{fd_dir}/{fd}") == target:
                return True
    return False


class TcpProxy:
    """Listens on 127.0.0.1:<port> and pipes each connection to the target; ``cut()`` drops them.

    Connections opened by process ``spare_pid`` (the test itself: its producer and readers) are never cut,
    so the stream goes on reaching the broker while the pipeline is cut off.
    """

    def __init__(self, target_port: int, port: int = 0, spare_pid: int | None = None) -> None:
        self.target = ("127.0.0.1", target_port)
        self.spare_pid = spare_pid
        self._listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._up = threading.Event()
        self._up.set()
        self._closed = False
        self.accepted = 0
        self.refused = 0
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def cut(self) -> None:
        """The outage: reset every open connection; new ones are closed at once."""
        self._up.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
                c.close()

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            spared = self.spare_pid is not None and _owned_by(self.spare_pid, client.getpeername()[1], self.port)
            if not self._up.is_set() and not spared:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.accepted += 1
            if not spared:
                with self._lock:
                    self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b, spared), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, spared: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or not (spared or self._up.is_set()):
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()
