"""Machine, ISA and version facts: the header of every benchmark output."""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from typing import Dict, List, Optional

__all__ = ["cpu_model", "physical_cores", "runtime_version", "machine_info", "format_header"]

# Part numbers of common Arm cores (MIDR part field, implementer 0x41 = Arm Ltd).
_ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C", "0xd4f": "Neoverse-V2", "0xd80": "Cortex-A520",
    "0xd81": "Cortex-A720", "0xd82": "Cortex-X4",
}


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip("\x00 \n")
    except OSError:
        return None


def cpu_model() -> str:
    """Human-readable CPU name: /proc/cpuinfo, Arm part numbers, sysctl on macOS, or platform."""
    info = _read("/proc/cpuinfo")
    if info:
        m = re.search(r"^(?:model name|Model Name|cpu model)\s*:\s*(.+)$", info, re.M)
        if m:
            return m.group(1).strip()
        parts = sorted(set(re.findall(r"^CPU part\s*:\s*(0x[0-9a-fA-F]+)", info, re.M)))
        if parts:
            names = [_ARM_PARTS.get(p.lower(), f"Arm part {p}") for p in parts]
            board = _read("/sys/firmware/devicetree/base/model")
            return " + ".join(names) + (f" ({board})" if board else "")
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                 text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def physical_cores() -> Optional[int]:
    """Distinct (package, core) pairs from sysfs; None when unknown."""
    base = "/sys/devices/system/cpu"
    try:
        cpus = [d for d in os.listdir(base) if re.fullmatch(r"cpu\d+", d)]
    except OSError:
        return None
    cores = set()
    for cpu in cpus:
        core = _read(f"{base}/{cpu}/topology/core_id")
        pkg = _read(f"{base}/{cpu}/topology/physical_package_id")
        if core is None:
            return None
        cores.add((pkg, core))
    return len(cores) or None


def runtime_version(dist: str) -> Optional[str]:
    """Installed version of a distribution without importing it (None if absent)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _affinity() -> Optional[int]:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def machine_info(threads: Optional[int] = None) -> Dict[str, object]:
    """Everything the header shows, as a JSON-ready dict (see ``schema.MACHINE_SCHEMA``)."""
    import numpy
    import torch

    import mnv3ext

    try:
        isas: List[str] = mnv3ext.available_isas()
    except Exception:  # pragma: no cover - a broken build still gets a header
        isas = []
    return {
        "cpu_model": cpu_model(),
        "arch": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "usable_cores": _affinity(),
        "isa_detected": mnv3ext.best_isa(),
        "isa_in_use": mnv3ext.current_isa(),
        "isa_available": isas,
        "isa_forced": os.environ.get("MNV3EXT_ISA") or None,
        "threads": int(threads if threads is not None else torch.get_num_threads()),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "mnv3ext_version": mnv3ext.__version__,
        "onnxruntime_version": runtime_version("onnxruntime"),
        "openvino_version": runtime_version("openvino"),
    }


def format_header(info: Dict[str, object]) -> str:
    """Plain-text header: CPU, cores, ISA detected/in use, versions, threads."""
    cores = f"{info['logical_cores']} logical"
    if info.get("physical_cores"):
        cores += f", {info['physical_cores']} physical"
    if info.get("usable_cores") and info["usable_cores"] != info["logical_cores"]:
        cores += f", {info['usable_cores']} usable"
    isa = f"{info['isa_in_use']} in use (detected best: {info['isa_detected']}"
    if info.get("isa_forced"):
        isa += f"; forced by MNV3EXT_ISA={info['isa_forced']}"
    isa += ")"
    versions = (f"mnv3ext {info['mnv3ext_version']}, torch {info['torch_version']}, "
                f"numpy {info['numpy_version']}, Python {info['python_version']}")
    optional = [f"{name} {info[key]}" for name, key in (("onnxruntime", "onnxruntime_version"),
                                                         ("openvino", "openvino_version")) if info.get(key)]
    lines = [
        f"CPU:      {info['cpu_model']} ({info['arch']}, {info['system']})",
        f"Cores:    {cores}",
        f"ISA:      {isa}",
        f"Versions: {versions}",
    ]
    if optional:
        lines.append(f"Optional: {', '.join(optional)}")
    lines.append(f"Threads:  {info['threads']}")
    return "\n".join(lines)
