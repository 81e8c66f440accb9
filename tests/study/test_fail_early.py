"""A study that cannot run fails before anything is created: exit 2, one line on stderr, and the study
directory as it was (absent, or untouched). A Ray address where no Ray cluster answers fails within seconds
(refused port, silent TCP listener, HTTP server, an HTTP/2 service that is not Ray, an unroutable host)."""

from __future__ import annotations

import fcntl
import http.server
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from symscale.cli import main

from study_files import write_study


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (``root`` included) with its kind, size and mtime: equal means untouched."""
    if not root.exists():
        return {}
    paths = [root, *sorted(root.rglob("*"))]
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns) for p in paths}


def study(capfd, *args) -> tuple[int, list[str], float]:
    """``symscale study ARGS`` in this process: exit status, stderr lines and seconds taken."""
    capfd.readouterr()
    t0 = time.monotonic()
    code = main(["study", *map(str, args)])
    took = time.monotonic() - t0
    return code, capfd.readouterr().err.splitlines(), took


# ---------------------------------------------------------------------------------------------- validation
BAD_STUDIES = {
    "option typo": ({"architectures": [{"family": "mpnn", "widths": [4]},
                                       {"family": "esen", "widths": [4, 8], "options": {"lmaxx": 4}}]},
                    "architectures.1.options: model 'esen': unknown option 'lmaxx' (options: "),
    "option value": ({"architectures": [{"family": "esen", "widths": [4], "options": {"lmax": 9}}]},
                     "architectures.0.options: model 'esen': option 'lmax' must be an integer in 1..4, got 9"),
    "option vs data cutoff": ({"architectures": [{"family": "gemnet", "widths": [8, 16],
                                                  "options": {"triplet_cutoff": 6.0}}]},
                              "architectures.0.options: model 'gemnet': option triplet_cutoff=6.0 must be in (0, 5.0]"),
}


@pytest.mark.parametrize("case", sorted(BAD_STUDIES))
def test_model_errors_are_found_before_anything_is_created(tmp_path, capfd, case):
    changes, message = BAD_STUDIES[case]
    path = write_study(tmp_path / "s.yaml", tmp_path / "study", **changes)
    code, err, _ = study(capfd, path)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"symscale: error: {path}: {message}"), err
    assert not (tmp_path / "study").exists()


def test_data_errors_are_found_before_anything_is_created(tmp_path, capfd):
    missing = tmp_path / "missing.xyz"
    path = write_study(tmp_path / "s.yaml", tmp_path / "study", data={"path": str(missing)})
    assert study(capfd, path)[:2] == (2, [f"symscale: error: {path}: data.path: {missing} does not exist"])
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is not\nan xyz file\n")
    path = write_study(tmp_path / "s.yaml", tmp_path / "study", data={"path": str(garbage)})
    code, err, _ = study(capfd, path)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"symscale: error: {garbage}: "), err
    assert not (tmp_path / "study").exists()


def test_an_existing_study_directory_is_left_untouched(tmp_path, capfd):
    from symscale.outputs import mark_dir

    (tmp_path / "study").mkdir()
    mark_dir(tmp_path / "study", "study")
    (tmp_path / "study" / "notes.txt").write_text("mine\n")
    before = tree(tmp_path / "study")
    path = write_study(tmp_path / "s.yaml", tmp_path / "study",
                       architectures=[{"family": "mpnn", "widths": [4], "options": {"num_layer": 2}}])
    code, err, _ = study(capfd, path)
    assert code == 2 and len(err) == 1 and "unknown option 'num_layer'" in err[0], err
    assert tree(tmp_path / "study") == before  # no lock file, no store, no study.yaml


def test_cuda_runs_without_a_gpu_fail_before_anything_is_created(tmp_path, capfd):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    path = write_study(tmp_path / "s.yaml", tmp_path / "study", device="cuda")
    assert study(capfd, path)[:2] == (2, ["symscale: error: device: 'cuda' runs need a GPU but this machine has none"])
    assert not (tmp_path / "study").exists()


def test_a_second_driver_is_refused_at_once_and_changes_nothing(tmp_path, capfd):
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    (study_dir / ".driver.lock").write_text("4242")
    before = tree(study_dir)
    path = write_study(tmp_path / "s.yaml", study_dir)
    with open(study_dir / ".driver.lock", "r+") as held:  # the first driver
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, err, took = study(capfd, path)
    assert (code, err) == (2, [f"symscale: error: {study_dir}: another symscale study process (pid 4242) is "
                               f"running this study"])
    assert tree(study_dir) == before and took < 5


def test_a_corrupt_aselmdb_is_one_line_with_ray_and_ray_never_starts(tmp_path):
    pytest.importorskip("ray")
    bad = tmp_path / "bad.aselmdb"
    bad.write_bytes(bytes(range(256)) * 20)
    path = write_study(tmp_path / "s.yaml", tmp_path / "study", data={"path": str(bad)})
    proc = subprocess.run([sys.executable, "-m", "symscale.cli", "study", str(path), "--backend", "ray"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"symscale: error: {bad}: cannot open aselmdb database (InvalidError: {bad}: "
                                        f"MDB_INVALID: File is not an LMDB file)"], proc.stderr  # no __del__ noise
    assert proc.stdout == "" and not (tmp_path / "study").exists()


# ---------------------------------------------------------------------------------------------- Ray addresses
def _serve(handle) -> int:
    """A TCP server on a free localhost port that runs ``handle(connection)`` for each client (daemon threads)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def accept():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv.getsockname()[1]


def _silent(conn):  # accepts and never answers
    time.sleep(60)
    conn.close()


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _h2_not_found(conn):
    """A minimal HTTP/2 server that answers every request with ``:status 404`` (like a web proxy)."""
    buf, sent_settings = b"", False
    with conn:
        while True:
            try:
                data = conn.recv(4096)
            except OSError:  # the client hung up
                return
            if not data:
                return
            buf += data
            if not sent_settings and len(buf) >= 24:
                buf, sent_settings = buf[24:], True  # the client preface
                conn.sendall(_h2_frame(4, 0, 0))
            while sent_settings and len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                size, kind, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
                stream, payload, buf = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + size], buf[9 + size:]
                if kind == 4 and not flags & 1:
                    conn.sendall(_h2_frame(4, 1, 0))  # SETTINGS ACK
                elif kind == 6 and not flags & 1:
                    conn.sendall(_h2_frame(6, 1, 0, payload))  # PING ACK
                elif kind == 1:
                    conn.sendall(_h2_frame(1, 5, stream, b"\x8d"))  # HEADERS ':status 404', end of stream


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def addresses():
    """name -> (address, expected reason inside the parentheses, seconds allowed)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused = closed.getsockname()[1]
    closed.close()
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    yield {
        "refused": (f"127.0.0.1:{refused}", "Connection refused", 5),
        "tcp listener": (f"127.0.0.1:{_serve(_silent)}", "the service there did not answer a gRPC handshake within 3 s",
                         6),
        "http server": (f"127.0.0.1:{web.server_address[1]}", "the service there does not speak gRPC; it answered "
                        "'<!DOCTYPE HTML>'", 5),
        "http/2 but not ray": (f"127.0.0.1:{_serve(_h2_not_found)}", "a service there speaks gRPC but is not a Ray "
                               "GCS: RPC error: Received http2 header with status: 404", 10),
    }
    web.shutdown()


@pytest.mark.parametrize("case", ["refused", "tcp listener", "http server", "http/2 but not ray"])
def test_no_ray_cluster_at_the_address_fails_within_seconds(tmp_path, capfd, addresses, case):
    pytest.importorskip("ray")
    address, reason, limit = addresses[case]
    path = write_study(tmp_path / "s.yaml", tmp_path / "study")
    code, err, took = study(capfd, path, "--backend", "ray", "--address", address)
    assert (code, err) == (2, [f"symscale: error: address: no Ray cluster answers at {address} ({reason})"])
    assert took < limit, took
    assert not (tmp_path / "study").exists()


def test_an_http2_service_that_never_answers_is_cut_off(tmp_path, capfd, monkeypatch):
    pytest.importorskip("ray")
    from symscale.study import ray_probe

    monkeypatch.setattr(ray_probe, "GCS_PROBE_TIMEOUT_S", 2.0)

    def settings_then_silence(conn):
        conn.sendall(_h2_frame(4, 0, 0))
        _silent(conn)

    address = f"127.0.0.1:{_serve(settings_then_silence)}"
    path = write_study(tmp_path / "s.yaml", tmp_path / "study")
    code, err, took = study(capfd, path, "--backend", "ray", "--address", address)
    assert (code, err) == (2, [f"symscale: error: address: no Ray cluster answers at {address} (a gRPC service "
                               f"answers there, but no Ray GCS reply came within 2 s)"])
    assert took < 5 and not (tmp_path / "study").exists()


def test_an_unroutable_address_fails_within_seconds(tmp_path, capfd):
    """10.255.255.1 is not routed on most networks (the connection times out); some sandboxes answer every
    address with a proxy instead. Either way: one line, within seconds, nothing created."""
    pytest.importorskip("ray")
    path = write_study(tmp_path / "s.yaml", tmp_path / "study")
    code, err, took = study(capfd, path, "--backend", "ray", "--address", "10.255.255.1:6379")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("symscale: error: address: no Ray cluster answers at 10.255.255.1:6379 ("), err
    assert took < 15 and not (tmp_path / "study").exists()
