"""`make bench`: every benchmark, one after another, results in benchmarks/results/ (JSON).

The README's performance numbers are copied from these files; rerun to check them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (result name, script, arguments)
BENCHES = [
    ("bench_eval", "bench_eval.py", []),
    ("bench_train", "bench_train.py", ["--setting", "math"]),
    ("bench_train_no_reuse", "bench_train.py", ["--setting", "math", "--no-cache-reuse"]),
    ("bench_train_tiny", "bench_train.py", ["--setting", "math", "--shape", "tiny"]),
    ("bench_train_toy", "bench_train.py", ["--setting", "toy"]),
    ("bench_train_3_attempts", "bench_train.py", ["--setting", "math", "--turns", "3"]),
    ("bench_sandbox", "bench_sandbox.py", []),
]


def main() -> int:
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    summary = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"}
    failed = 0
    for name, script, args in BENCHES:
        target = out / f"{name}.json"
        print(f"== {name}", flush=True)
        r = subprocess.run([sys.executable, str(HERE / script), *args, "--out", str(target)])
        if r.returncode != 0:
            failed += 1
            continue
        summary[name] = json.loads(target.read_text())
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
