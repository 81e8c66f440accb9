"""Is a Ray cluster at ``--address``? :func:`probe_address` answers within seconds, starting nothing.

``ray.init(address=...)`` retries an address that does not answer like a Ray GCS for minutes (a refused port,
an unroutable host, an HTTP server, any TCP listener, a proxy) and prints C++ warnings meanwhile. The probe
runs bounded checks first, so ``symscale study --backend ray --address ...`` fails with one line instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from ..errors import ConfigError

#: Seconds for the TCP connection to ``--address`` and for the first answer of the service there.
PROBE_TIMEOUT_S = 3.0
#: Seconds for Ray's own GCS client (in a subprocess: left alone, it retries for minutes) to answer.
GCS_PROBE_TIMEOUT_S = 10.0
#: The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server answers with its SETTINGS frame.
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_GCS_PROBE = """
import json, sys
try:
    from ray._raylet import GcsClient
    GcsClient(address=sys.argv[1]).internal_kv_get(b"symscale-probe", None, timeout=float(sys.argv[2]))
    print(json.dumps({"ok": True}))
except Exception as exc:
    print(json.dumps({"ok": False, "type": type(exc).__name__, "message": str(exc)}))
"""


def _read(sock: socket.socket, n: int) -> bytes:
    """Up to ``n`` bytes; fewer at the end of the stream or when the socket times out after some arrived."""
    data = b""
    try:
        while len(data) < n and (chunk := sock.recv(n - len(data))):
            data += chunk
    except TimeoutError:
        if not data:
            raise
    return data


def probe_address(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """A one-line ConfigError unless a Ray cluster answers at ``host:port`` or ``ray://host:port`` (other forms,
    e.g. ``auto``, are left to Ray), after three bounded checks: a TCP connection (``timeout`` s); the HTTP/2
    handshake that every gRPC server (the GCS, the Ray Client server) answers with a SETTINGS frame (``timeout``
    s); and, for a GCS address, one request of Ray's own GCS client in a subprocess whose output is discarded
    and which is killed after :data:`GCS_PROBE_TIMEOUT_S`."""
    client = address.startswith("ray://")
    host, sep, port = (address[len("ray://"):] if client else address).rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    host = host.strip("[]")

    def fail(why) -> ConfigError:
        return ConfigError(f"address: no Ray cluster answers at {address} ({why})")

    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except TimeoutError:
        raise fail(f"no connection within {timeout:g} s") from None
    except OSError as exc:
        raise fail(exc.strerror or exc) from None
    with sock:
        try:
            sock.sendall(_H2_HELLO)
            head = _read(sock, 9)
            grpc = len(head) == 9 and head[3] == 0x04 and head[5:9] == bytes(4)  # SETTINGS on stream 0
            if head and not grpc:
                sock.settimeout(0.5)  # what the service did answer names it (``HTTP/1.1 400 ...``)
                try:
                    head += _read(sock, 80)
                except OSError:
                    pass
        except TimeoutError:
            raise fail(f"the service there did not answer a gRPC handshake within {timeout:g} s") from None
        except OSError as exc:
            raise fail(f"the service there dropped the gRPC handshake: {exc.strerror or exc}") from None
    if not head:
        raise fail("the service there closed the connection at the gRPC handshake")
    if not grpc:
        text = "".join(c if c.isprintable() else " " for c in head.decode("ascii", "replace").split("\n")[0])
        raise fail(f"the service there does not speak gRPC; it answered {' '.join(text.split())[:60]!r}")
    if not client:
        _probe_gcs(address, f"{host}:{port}" if ":" not in host else f"[{host}]:{port}")


def _probe_gcs(address: str, target: str) -> None:
    """One request of Ray's GCS client to ``target``; ConfigError naming ``address`` if it fails or hangs."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        proc = subprocess.run([sys.executable, "-c", _GCS_PROBE, target, str(PROBE_TIMEOUT_S)], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=GCS_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"address: no Ray cluster answers at {address} (a gRPC service answers there, but no "
                          f"Ray GCS reply came within {GCS_PROBE_TIMEOUT_S:g} s)") from None
    try:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = proc.stderr.strip().splitlines()
        res = {"ok": False, "type": "", "message": tail[-1] if tail else f"exit status {proc.returncode}"}
    if res.get("ok"):
        return
    if res.get("type") == "AuthenticationError":
        raise ConfigError(f"address: the Ray cluster at {address} requires token authentication and this process "
                          f"has no valid token (set RAY_AUTH_MODE=token and give the cluster's token in "
                          f"RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    first = (str(res.get("message") or "").strip().splitlines() or [""])[0]
    raise ConfigError(" ".join(f"address: no Ray cluster answers at {address} (a service there speaks gRPC but is "
                               f"not a Ray GCS: {first[:200]})".split()))
