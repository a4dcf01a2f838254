"""pytest-benchmark suites of mnv3ext (not part of the test suite; see bench/README.md).

    python3 -m pytest bench/bench_ops.py       # every depthwise / SE layer, eager vs ours
    python3 -m pytest bench/bench_models.py    # whole models, every backend

Options: --bench-threads N (default 1), --bench-seconds S (budget per interleaved op-table row,
default 0.3), --bench-compile (also the torch.compile backends: slow to prepare), plus
pytest-benchmark's own (--benchmark-min-rounds, --benchmark-json FILE, ...).
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a source checkout without installing
    sys.path.insert(0, ROOT)


def pytest_addoption(parser):
    group = parser.getgroup("mnv3ext")
    group.addoption("--bench-threads", type=int, default=1, help="torch / runtime threads (default 1)")
    group.addoption("--bench-seconds", type=float, default=0.3,
                    help="time budget per case of bench_ops.py's interleaved rows (default 0.3)")
    group.addoption("--bench-compile", action="store_true",
                    help="also benchmark the torch.compile backends (minutes of compilation)")


def pytest_collect_file(parent, file_path):
    # bench_*.py are collected when the directory is given (``python3 -m pytest bench/``).
    # Files named on the command line are collected by pytest itself.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def bench_threads(request):
    return request.config.getoption("--bench-threads")


@pytest.fixture(scope="session")
def bench_seconds(request):
    return request.config.getoption("--bench-seconds")


@pytest.fixture(autouse=True)
def _threads_and_inference(bench_threads):
    old = torch.get_num_threads()
    torch.set_num_threads(bench_threads)
    with torch.inference_mode():
        yield
    torch.set_num_threads(old)


def pytest_report_header(config):
    import mnv3ext
    from mnv3ext.bench.machine import format_header, machine_info

    return format_header(machine_info(config.getoption("--bench-threads"))).splitlines() + [
        f"mnv3ext kernels: {mnv3ext.current_isa()}"]
