"""A local MLflow tracking server (`mlflow server` on 127.0.0.1, a SQLite store, artifacts
in a folder) started and stopped from Python: what the tests, the overhead benchmark and
the sweep demo log to. A team's own server is started its own way; this is for a machine
that has none."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

START_SECONDS = 120  # a cold start (its database migrations) takes 10-30 s on 2 cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """`mlflow server` with its store and artifacts under `root`; `start()` returns once
    it answers, `stop()` ends it and the workers it started. The port stays the same
    across a stop and a start, so a client's URI stays valid."""

    def __init__(self, root: str | Path):
        self.root, self.port = Path(root), free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> LocalServer:
        self.root.mkdir(parents=True, exist_ok=True)
        command = [str(Path(sys.executable).with_name("mlflow")), "server",
                   "--host", "127.0.0.1", "--port", str(self.port),
                   "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                   "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"]
        with open(self.root / "server.log", "ab") as log_file:  # the child keeps its copy
            self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file,
                                         start_new_session=True)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        tail = (self.root / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"mlflow server on {self.uri} did not start: {tail}")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
