"""What this machine is: the CPU's name and the instruction-set flags that decide which
int8 and bf16 kernels run, and the training precision that follows from them.

A leaf module (standard library only): measurement, quantization presets, training and
the app all read the machine from here, through one /proc/cpuinfo parser.
"""
from __future__ import annotations

import platform
from pathlib import Path

# flags that change which kernels ONNX Runtime / oneDNN pick: int8 dot products, bf16, AMX, ARM dot products
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "asimddp", "i8mm", "bf16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 dot products on x86: autocast pays (BENCHMARKS.md)
PRECISIONS = ("auto", "fp32", "bf16")


def _cpuinfo() -> dict[str, str]:
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_name() -> str:
    """The CPU's model name; where a virtual machine hides the model number ("AMD EPYC" is a Zen 1,
    3 or 4, and their int8/bf16 kernels differ), the x86 family and model are added to tell them apart."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    if not any(c.isdigit() for c in name) and info.get("cpu family") and info.get("model"):
        name += f" (family {info['cpu family']} model {info['model']})"
    return name


def cpu_flags() -> list[str]:
    """The flags of ISA_FLAGS this CPU has (x86 ``flags`` or ARM ``Features``)."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return [f for f in ISA_FLAGS if f in flags]


def machine() -> dict:
    """The facts every benchmark and metrics.json row carries beside a timing."""
    import os

    return {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count()}


def training_precision(requested: str, device: str = "cpu", flags: list[str] | None = None,
                       cuda_bf16: bool = False) -> str:
    """``auto`` -> bf16 autocast where the hardware has native bf16 math (x86 AVX512-BF16/AMX,
    a CUDA GPU that supports it), else fp32. ``fp32``/``bf16`` are taken as asked."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested != "auto":
        return requested
    if device == "cuda":
        return "bf16" if cuda_bf16 else "fp32"
    have = set(cpu_flags() if flags is None else flags)
    return "bf16" if have & set(BF16_FLAGS) else "fp32"
