"""A ``rotwatch gateway run`` child process with a bearer token, and raw HTTP helpers.

The gateway runs as users run it (uvicorn, its own process, real sockets), in a
project of its own on the emulators given by the environment.
"""
from __future__ import annotations

import os
import socket
import time

from faultkit.procs import CliProcess, cli, stack_env

__all__ = ["Gateway", "start_gateway", "raw_request", "TOKEN"]

# 32 characters, over the gateway's 16-character minimum.
TOKEN = "fault-suite-token-0123456789abcd"
READY_TIMEOUT_S = 120.0


class Gateway:
    def __init__(self, proc: CliProcess, port: int, token: str, project: str,
                 model_root: str):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.token = token
        self.project = project
        self.model_root = model_root

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self) -> None:
        self.proc.stop()


def start_gateway(project: str, model_root: str, workdir: str, token: str = TOKEN,
                  log_path: str | None = None, extra: tuple = ()) -> Gateway:
    import httpx

    from emulators.grpcserver import free_port

    token_file = os.path.join(workdir, "gateway-token")
    with open(token_file, "w", encoding="utf-8") as handle:
        handle.write(token)
    port = free_port()
    proc = CliProcess("gateway", cli("gateway", "run", "--port", str(port),
                                     "--token-file", token_file, *extra),
                      stack_env(project, model_root, home=workdir), log_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)
            if health.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if not proc.alive or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"the gateway did not start; last lines:\n{proc.tail()}")
        time.sleep(0.2)
    return Gateway(proc, port, token, project, model_root)


def raw_request(port: int, head: bytes, body_chunks=(), timeout: float = 30.0) -> int:
    """Send ``head`` then ``body_chunks`` on a fresh connection; the status code the
    server answers with (it may answer, and close, before the body is all sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass   # refused mid-body: the answer is already waiting
        data = b""
        try:
            while b"\r\n" not in data:
                got = sock.recv(65536)
                if not got:
                    break
                data += got
        except ConnectionResetError:
            pass
    first = data.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[1].isdigit() else 0
