"""Where the numbers come from: date, GPU, driver, library versions and the math settings that matter."""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def driver_version() -> str:
    """The NVIDIA driver, from nvidia-smi (or NVML); 'none' without one."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        return str(pynvml.nvmlSystemGetDriverVersion())
    except Exception:  # no NVML library, no driver
        return "none"


def _git_commit(root: Path) -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip() if done.returncode == 0 else "unknown (no git here)"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no git here)"


def source_digest(root: Path) -> str:
    """sha256 of apl/ and benchmarks/ sources: ties results to code where the tree has no .git."""
    digest = hashlib.sha256()
    for folder in ("apl", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _gpu(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        return {"name": "none", "driver": driver_version()}
    props = torch.cuda.get_device_properties(device)
    return {
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": props.total_memory / 2**30,
        "multiprocessors": props.multi_processor_count,
        "driver": driver_version(),
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "bf16_supported": torch.cuda.is_bf16_supported(),
    }


def describe(device: torch.device, root: Path) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "gpu": _gpu(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "transformers": _version("transformers"),
        "triton": _version("triton"),
        "pydantic": _version("pydantic"),
        "cpu_count": os.cpu_count() or 1,
        "torch_threads": torch.get_num_threads(),
        # fp32 matrix products use full fp32 unless TF32 is allowed; cuDNN convolutions use TF32 by default.
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "commit": _git_commit(root),
        "source_digest": source_digest(root),
    }
