"""kafka-python 3.0.12 reads fetch answers with much more work under the GIL than needed: amended here.

Its transports read the socket 4 KiB per ``recv`` call (a Python loop iteration, list append and join
for every 4 KiB of a multi-MB fetch answer), and ``KafkaBytes.read`` copies every field it decodes
twice (a bytearray slice, then ``bytes`` of it), the records blob of a fetch answer included. This
runs on kafka-python's IO thread holding the GIL, so it halts the thread that decodes and detects.
Measured side by side (``docs/benchmarks.md``, "kafka-python's IO thread"): on 100-reading messages
the PM10 peer job about 1.2x faster and the end-to-end loop about 1.1x; single-reading messages
unchanged within the noise. The code is kafka-python's own otherwise: what is read, the errors and
the logging are unchanged, only the piece size and the copies.

It is process-wide (every kafka-python client in the process reads this way, the benchmarks' raw
baselines included) and applied once, when :mod:`ingest.kafka_io` is imported.
"""

from __future__ import annotations

import logging
import ssl

from kafka import errors as kafka_errors
from kafka.net import transport as kafka_transport
from kafka.protocol import frame as kafka_frame

__all__ = ["RECV_BYTES", "read_in_large_pieces"]

#: Bytes asked of the socket per ``recv`` call (kafka-python: 4096). A call returns what is buffered.
RECV_BYTES = 1 << 20

log = logging.getLogger("kafka.net.transport")

_NOT_YET = {
    "KafkaTCPTransport": (BlockingIOError, InterruptedError),
    "KafkaSSLTransport": (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError),
}


def _recv_all(not_yet: tuple[type[BaseException], ...]):
    """A ``_sock_recv`` as kafka-python's, asking for ``RECV_BYTES`` per call instead of 4096."""

    def _sock_recv(self):
        recvd = []
        err = None
        while True:
            try:
                data = self._sock.recv(RECV_BYTES)
                if not data:
                    log.error("%s: socket disconnected", self)
                    err = kafka_errors.KafkaConnectionError("socket disconnected")
                    break
                recvd.append(data)
            except not_yet:
                break
            except BaseException as e:
                log.exception("%s: Error receiving network data closing socket", self)
                err = kafka_errors.KafkaConnectionError(e)
                break
        return b"".join(recvd), err  # one piece: the same object, no copy

    _sock_recv.amended_by_stadtwacht = True
    return _sock_recv


def _read_one_copy(self, nbytes=None):
    """``KafkaBytes.read`` with one copy instead of two (same result, same position)."""
    if nbytes is None:
        nbytes = len(self) - self._idx
    start = self._idx
    self._idx += nbytes
    if self._idx > len(self):
        self._idx = len(self)
    with memoryview(self) as view:
        return view[start:self._idx].tobytes()


_read_one_copy.amended_by_stadtwacht = True


def read_in_large_pieces() -> bool:
    """Amend kafka-python's socket reads and field copies (idempotent); False when its code is not the
    expected shape (another version: left alone)."""
    classes = [getattr(kafka_transport, name, None) for name in _NOT_YET]
    kafka_bytes = getattr(kafka_frame, "KafkaBytes", None)
    if None in classes or kafka_bytes is None or not hasattr(kafka_bytes, "read"):
        return False
    if not all(hasattr(cls, "_sock_recv") for cls in classes):
        return False
    for cls in classes:
        if not getattr(cls.__dict__.get("_sock_recv"), "amended_by_stadtwacht", False):
            cls._sock_recv = _recv_all(_NOT_YET[cls.__name__])
    kafka_bytes.read = _read_one_copy
    return True
