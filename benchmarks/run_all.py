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
BENCHES = ["bench_eval.py", "bench_train.py", "bench_sandbox.py"]


def main() -> int:
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    summary = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"}
    failed = 0
    for name in BENCHES:
        target = out / name.replace(".py", ".json")
        print(f"== {name}", flush=True)
        r = subprocess.run([sys.executable, str(HERE / name), "--out", str(target)])
        if r.returncode != 0:
            failed += 1
            continue
        summary[name] = json.loads(target.read_text())
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
