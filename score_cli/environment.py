"""What `score` runs on: package versions (recorded with every evaluation) and `score env`'s report,
the lines to paste into a bug report, as `trl env` gives them."""

from __future__ import annotations

import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

from score_cli import __version__

PACKAGES = ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "math-verify", "vllm")


def package_versions() -> dict[str, str]:
    """score's, python's and the installed main packages' versions (a missing optional one is left out)."""
    out = {"score": __version__, "python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows: float results of
    the same training differ between CPUs, so a run record names the one it ran on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_kernels() -> str:
    """The vector instructions torch's CPU kernels use here (e.g. AVX2, AVX512): another set sums
    in another order, so the same seeded training can end in another model."""
    try:
        import torch

        return torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):
        return "unknown"


def environment_report() -> dict[str, str]:
    """Platform, versions (every package named, 'not installed' where it is not) and the accelerators
    torch sees. Imports torch, to ask it about CUDA."""
    versions = package_versions()
    report = {"platform": platform.platform(), "python": f"{versions['python']} ({sys.executable})",
              "score": versions["score"], "CPU": f"{cpu_name()} (torch kernels: {cpu_kernels()})"}
    for pkg in PACKAGES:
        report[pkg] = versions.get(pkg, "not installed")
    try:
        import torch
    except ImportError:
        report["CUDA"] = "unknown (torch is not installed)"
        return report
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        report["CUDA"] = f"available: CUDA {torch.version.cuda}, {len(names)} device(s)"
        for i, name in enumerate(names):
            free, total = torch.cuda.mem_get_info(i)
            report[f"cuda:{i}"] = f"{name}, {total / 2**30:.0f} GiB ({free / 2**30:.0f} GiB free)"
    else:
        built = f" (torch built with CUDA {torch.version.cuda})" if torch.version.cuda else " (a CPU build of torch)"
        report["CUDA"] = "not available" + built
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        report["MPS"] = "available"
    return report


def command_line(argv: list[str] | None = None, *, resume: bool = False) -> str:
    """This process's command as one can type it again (`score ...` or `python -m score_cli ...`);
    with `resume`, the command that continues it (--resume added, --no-resume dropped)."""
    argv = list(sys.argv if argv is None else argv)
    prog = "python -m score_cli" if argv and Path(argv[0]).name == "__main__.py" else "score"
    args = argv[1:]
    if resume:
        args = [a for a in args if a != "--no-resume"]
        if "--resume" not in args:
            args.append("--resume")
    return f"{prog} {shlex.join(args)}".rstrip()
