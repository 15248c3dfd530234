"""Print what the CLI says for every README command, with times, ports and paths masked.

Why: a refactor that claims "behaviour unchanged" is checked by running this script on the code
before and after and diffing the two transcripts (issue 13: the CLI's output for the README's
commands is byte-identical before and after, masking times). It runs every ``harvester ...`` line
of the README in order against a simulator, as ``tests/test_readme.py`` does, plus a few error
paths, and prints each command's exit code, stdout and stderr.

    python benchmarks/cli_transcript.py > after.txt
    diff before.txt after.txt
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harvester.simulator import SimulatorServer, SimulatorSettings  # noqa: E402
from tests.support import cli_env, run_cli, write_config  # noqa: E402
from tests.test_readme import readme_commands  # noqa: E402

# What differs between two runs of the same code: wall-clock times, durations, run ids, the
# simulator's port and credentials, the temporary folder.
_MASKS = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:?\d\d|Z)?"), "<TIME>"),
    (re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}"), "<RUN>"),
    (re.compile(r"\b\d\d:\d\d(:\d\d)?\b"), "<HH:MM>"),
    (re.compile(r"\b\d+(\.\d+)?\s?(ms|s|min|h|jobs/s|req/s|MB|KB|kB|B)\b"), "<QTY>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<PORT>"),
    (re.compile(r"[0-9a-f]{32}"), "<HEX32>"),
]

# Error paths worth watching too (each must stay one line and the same exit code).
_EXTRA = [
    ["status", "--store", "no-such-store"],
    ["query", "SELECT nonsense FROM nowhere"],
    ["plan", "--start", "2024-02-30"],
    ["pull", "--phones", ""],
]


def mask(text: str, tmp: str) -> str:
    text = text.replace(tmp, "<TMP>")
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


def main() -> None:
    today = dt.datetime.now(dt.UTC).date()
    settings = SimulatorSettings(limit=500, window_seconds=2)
    with tempfile.TemporaryDirectory() as tmp, SimulatorServer(settings) as sim:
        folder = Path(tmp)
        write_config(folder, sim, start=today - dt.timedelta(days=6), end="yesterday")
        env = cli_env(sim)
        for argv in [c[1:] for c in readme_commands()] + _EXTRA:
            result = run_cli(argv, env=env, cwd=folder)
            print(f"$ harvester {shlex.join(argv)}  -> exit {result.returncode}")
            print(mask(result.stdout, tmp).rstrip())
            if result.stderr.strip():
                print("[stderr]")
                print(mask(result.stderr, tmp).rstrip())
            print()


if __name__ == "__main__":
    main()
