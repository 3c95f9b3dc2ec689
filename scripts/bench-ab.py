#!/usr/bin/env python3
"""Compares two (or more) pseq binaries on `pseq bench exec`, round by round.

Each round runs `BIN bench exec --json ARGS...` once with every binary, the order reversed every
other round, so that the machine's slow spells fall on both alike. Prints each round's speedup,
sequential and parallel medians (and the geometric mean for the corpora), then the median of the
rounds per binary and workload.

    python3 scripts/bench-ab.py /tmp/pseq-before,target/release/pseq 4 \\
        --threads 2 --runs 7 --workload mainnet

Environment: `_RJEM_MALLOC_CONF` defaults to transparent huge pages, as the report is measured.
"""
import json
import os
import statistics
import subprocess
import sys


def main() -> int:
    if len(sys.argv) < 3 or not sys.argv[2].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    binaries = sys.argv[1].split(",")
    rounds = int(sys.argv[2])
    args = sys.argv[3:]
    env = dict(os.environ)
    env.setdefault("_RJEM_MALLOC_CONF", "thp:always,metadata_thp:always")
    results: dict[str, dict[str, list[list[float]]]] = {b: {} for b in binaries}
    for round_ in range(rounds):
        order = binaries if round_ % 2 == 0 else binaries[::-1]
        for binary in order:
            try:
                run = subprocess.run([binary, "bench", "exec", "--json", *args], capture_output=True, text=True, env=env)
            except OSError as error:
                print(f"{binary}: {error}", file=sys.stderr)
                return 1
            if run.returncode != 0:
                print(f"{binary} failed ({run.returncode}):\n{run.stderr[-2000:]}", file=sys.stderr)
                return 1
            for line in run.stdout.splitlines():
                if not line.startswith("{"):
                    continue
                row = json.loads(line)
                values = [row["speedup"], row["sequential_ms"], row["parallel_ms"]]
                if "geomean_speedup" in row:
                    values.append(row["geomean_speedup"])
                results[binary].setdefault(row["workload"], []).append(values)
                print(round_, binary, row["workload"], " ".join(f"{v:.4f}" for v in values), flush=True)
    print("median of the rounds: speedup, sequential ms, parallel ms[, geometric mean]")
    for binary in binaries:
        for workload, rows in results[binary].items():
            medians = [statistics.median(column) for column in zip(*rows)]
            print("MEDIAN", binary, workload, " ".join(f"{v:.4f}" for v in medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
