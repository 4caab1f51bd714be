"""Which floating-point type a Chronos model computes in: float32 unless bfloat16 is asked
for and the device computes it natively (CUDA, or a CPU with AVX512-BF16 or AMX)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from training_hooks.chronos.validation import ChronosSourceError

logger = logging.getLogger(__name__)

DTYPE_ENV = "TRADESERVE_CHRONOS_DTYPE"


def native_cpu_bf16(cpuinfo: str | None = None) -> bool:
    """True when this CPU computes bfloat16 in hardware: AVX512-BF16 or AMX among the
    ``flags`` of ``cpuinfo`` (default: this machine's ``/proc/cpuinfo``; Linux only)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {
        flag
        for line in cpuinfo.splitlines()
        if line.split(":", 1)[0].strip() == "flags"
        for flag in line.split(":", 1)[1].split()
    }
    return not flags.isdisjoint({"avx512_bf16", "amx_bf16"})


def resolve_dtype(requested: str | None, device: str) -> torch.dtype:
    """float32 unless config or ``TRADESERVE_CHRONOS_DTYPE`` asks for bfloat16, which is
    honoured on CUDA and on CPUs with native bf16; elsewhere bf16 is emulated (slower than
    float32), so the request falls back to float32 with a warning."""
    name = (requested or os.environ.get(DTYPE_ENV) or "float32").lower()
    if name not in ("float32", "bfloat16"):
        raise ChronosSourceError(f"unsupported Chronos dtype '{name}'; use float32 or bfloat16")
    if name == "bfloat16" and not device.startswith("cuda") and not native_cpu_bf16():
        logger.warning(
            "bfloat16 requested on %s, whose CPU has no native bf16 (AVX512-BF16 or AMX); "
            "using float32",
            device,
        )
        return torch.float32
    return torch.bfloat16 if name == "bfloat16" else torch.float32
