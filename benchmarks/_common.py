"""What the benchmark scripts share: a simulator in its own process, a lifted-quota config, and
a one-line description of the machine (every figure is reported with the machine it ran on).

The scripts run as ``python benchmarks/NAME.py``, so this module is imported as ``_common``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

LIFTED_LIMIT = 10**9  # "the quota lifted": no window's budget is ever reached
WINDOW_SECONDS = 900  # the documented window (irrelevant once the limit is lifted)
READY_LINE = "Ctrl-C to stop"  # the last line `harvester simulate` prints before serving


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_serving(
    command: Sequence[str], env: dict[str, str], timeout: float, cwd: Path | None = None
) -> tuple[subprocess.Popen[str], list[str]]:
    """Start a simulator process and wait for it to serve; returns it and what it printed."""
    proc = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if READY_LINE in line:
            return proc, seen
    proc.kill()
    proc.wait()
    raise RuntimeError("the simulator did not start:\n" + "".join(seen))


def stop(proc: subprocess.Popen[str]) -> None:
    """Terminate a helper process, killing it if it does not go within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_lifted_config(
    folder: Path,
    *,
    base_url: str,
    login: str,
    password_env: str,
    phones: Sequence[str],
    start: dt.date,
    end: dt.date,
    concurrency: int,
    store_path: str,
    flush_jobs: int,
    flush_seconds: float,
    auto_compact: bool,
) -> Path:
    """Write ``folder/config.toml`` for a pull with the quota lifted (mode 600); returns it."""
    text = f"""
[api]
base_url = "{base_url}"
login = "{login}"
password_env = "{password_env}"
concurrency = {concurrency}
timeout_seconds = 60

[quota]
limit = {LIFTED_LIMIT}
window_seconds = {WINDOW_SECONDS}

[harvest]
phones = {json.dumps(list(phones))}
start = {start.isoformat()}
end = {end.isoformat()}
window = "day"
timezone = "UTC"
economy = "off"  # one request per job: what these servers and counts assume

[store]
path = "{store_path}"
flush_jobs = {flush_jobs}
flush_seconds = {flush_seconds}
auto_compact = {str(auto_compact).lower()}
"""
    path = folder / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def machine() -> str:
    """CPU model, cores, memory, kernel and Python, for the benchmark's report."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = re.sub(r"\s+", " ", line.split(":", 1)[1].strip())
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )
