"""Readiness probe for a local Kafka broker: asks ApiVersions then Metadata over the wire (stdlib only).

Used by apache-kafka.sh so `start` returns only once the broker serves metadata, not merely accepts TCP.
Exit status 0 when the broker listed itself in a Metadata response, 1 otherwise (reason on stderr).
"""

from __future__ import annotations

import argparse
import socket
import ssl
import struct
import sys

__all__ = ["probe"]

API_METADATA = 3
API_VERSIONS = 18
CLIENT_ID = b"stadtwacht-probe"


def _request(sock: socket.socket, api_key: int, api_version: int, correlation_id: int, body: bytes) -> bytes:
    """Send one request with header v1 and return the response body after the correlation id."""
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _read(sock, 4))[0]
    response = _read(sock, size)
    (got,) = struct.unpack(">i", response[:4])
    if got != correlation_id:
        raise RuntimeError(f"correlation id {got} != {correlation_id}")
    return response[4:]


def _read(sock: socket.socket, n: int) -> bytes:
    """Read exactly n bytes."""
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _metadata_version(api_versions: bytes) -> int:
    """Pick a non-flexible Metadata version (1..7) that the broker supports."""
    error, count = struct.unpack(">hi", api_versions[:6])
    if error:
        raise RuntimeError(f"ApiVersions error code {error}")
    for i in range(count):
        key, low, high = struct.unpack(">hhh", api_versions[6 + 6 * i : 12 + 6 * i])
        if key == API_METADATA:
            version = min(high, 7)
            if version < max(low, 1):
                raise RuntimeError(f"broker Metadata versions {low}..{high} need a flexible encoding")
            return version
    raise RuntimeError("broker does not list the Metadata API")


def _broker_ports(metadata: bytes) -> list[tuple[int, str, int]]:
    """Parse the broker list of a Metadata v1..v7 response (v3+ start with throttle_time_ms)."""
    offset = 4
    (count,) = struct.unpack(">i", metadata[offset : offset + 4])
    offset += 4
    brokers = []
    for _ in range(count):
        node_id, host_len = struct.unpack(">ih", metadata[offset : offset + 6])
        offset += 6
        host = metadata[offset : offset + host_len].decode()
        offset += host_len
        port, rack_len = struct.unpack(">ih", metadata[offset : offset + 6])
        offset += 6 + max(rack_len, 0)
        brokers.append((node_id, host, port))
    return brokers


def probe(port: int, cafile: str | None = None, timeout: float = 5.0) -> list[tuple[int, str, int]]:
    """Return the brokers that 127.0.0.1:port lists in its Metadata response."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock: socket.socket = raw
    if cafile:
        context = ssl.create_default_context(cafile=cafile)
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    with sock:
        version = _metadata_version(_request(sock, API_VERSIONS, 0, 1, b""))
        body = struct.pack(">i", -1)  # all topics
        if version >= 4:
            body += b"\x00"  # allow_auto_topic_creation = false
        response = _request(sock, API_METADATA, version, 2, body)
        if version < 3:
            response = b"\x00\x00\x00\x00" + response
        return _broker_ports(response)


def main() -> int:
    """Command line entry: exit 0 when the broker lists itself."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", default=None, help="CA bundle; connect with TLS when given")
    args = parser.parse_args()
    try:
        brokers = probe(args.port, args.cafile)
    except (OSError, RuntimeError, struct.error) as exc:
        print(f"probe 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    if not any(port == args.port for _, _, port in brokers):
        print(f"probe 127.0.0.1:{args.port}: metadata lists brokers {brokers}", file=sys.stderr)
        return 1
    print(f"brokers {brokers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
