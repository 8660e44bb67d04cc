"""`--workers K`: K copies of the same command on one machine, with the cores divided.

Each worker is an ordinary `imgcls sweep|tune ... --workers 1 --threads T` process; they
coordinate only through the experiment folder (sweep locks) or the study database (tune),
exactly as workers on different machines would. Their output (stdout and stderr) is relayed
line by line as this process's messages, so `--quiet` silences them too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from imgcls.log import get_logger

log = get_logger(__name__)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    return max(1, available_cores() // workers)


def run_workers(args: list[str], workers: int) -> int:
    """Run `imgcls ARGS --workers 1 --threads T` K times; their output prefixed [w1].. [wK].
    Returns the first non-zero exit status, or 0."""
    threads = threads_per_worker(workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "imgcls.cli", *args, "--workers", "1",
               "--threads", str(threads)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, bufsize=1, env={**env, "IMGCLS_WORKER": str(i + 1)})
             for i in range(workers)]
    log.info(f"{workers} workers x {threads} threads")

    def relay(i: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info(f"[w{i + 1}] {line.rstrip()}")

    relays = [threading.Thread(target=relay, args=(i, p), daemon=True)
              for i, p in enumerate(procs)]
    for thread in relays:
        thread.start()
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.wait()  # they got the same Ctrl-C; let them leave their runs resumable
        raise
    for thread in relays:
        thread.join()
    return next((c for c in codes if c), 0)
