"""CLI start-up: `stella --help` and `stella bundle --help` against a bare Python start-up.

Issue 15's target: `stella --help` in ≤ 0.30 s. Medians of interleaved repeats (this machine is
noisy); the peer is `python3 -c pass` in the same run, so the ratio says what stella adds.

    python3 bench/startup.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGET_SECONDS = 0.30
COMMANDS = {
    "python3 -c pass": [sys.executable, "-c", "pass"],
    "stella --help": [sys.executable, "-m", "stella_bundle", "--help"],
    "stella bundle --help": [sys.executable, "-m", "stella_bundle", "bundle", "--help"],
    "stella --version": [sys.executable, "-m", "stella_bundle", "--version"],
}


def _seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for command in COMMANDS.values():  # warm the page cache once
        _seconds(command)
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            samples[name].append(_seconds(command))
    bare = statistics.median(samples["python3 -c pass"])
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:24s} median {median:.3f} s  ({median / bare:.1f}× bare python)")
    help_seconds = statistics.median(samples["stella --help"])
    verdict = "meets" if help_seconds <= TARGET_SECONDS else "misses"
    print(f"stella --help: {help_seconds:.3f} s, {verdict} the {TARGET_SECONDS:.2f} s target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
