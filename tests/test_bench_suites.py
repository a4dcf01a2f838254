"""The pytest-benchmark suites in bench/ still run (they are not part of the test suite itself):
one op-table row through bench/bench_ops.py, checked in its JSON."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import mnv3ext

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def test_interleaved_row_lands_in_the_benchmark_json(tmp_path):
    pytest.importorskip("pytest_benchmark")  # in the test extras; not everyone running pytest has it
    # A copy outside the checkout, run with PYTHONPATH at the mnv3ext this process imported (its
    # conftest would otherwise put the source folder first, which has no _C unless built in place).
    suite = tmp_path / "bench"
    suite.mkdir()
    for name in ("conftest.py", "bench_ops.py"):
        shutil.copy(os.path.join(BENCH, name), suite / name)
    out = tmp_path / "rows.json"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench_ops.py",
         "-k", "interleaved_row and small.se9_c288_s7_sq72-cl", "--bench-seconds", "0.05",
         f"--benchmark-json={out}"],
        cwd=suite, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(mnv3ext.__file__)))})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    benchmarks = json.loads(out.read_text())["benchmarks"]
    assert [b["name"] for b in benchmarks] == ["test_interleaved_row[small.se9_c288_s7_sq72-cl]"]
    assert benchmarks[0]["group"] == "interleaved rows"
    row = benchmarks[0]["extra_info"]
    assert row["id"] == "small.se9_c288_s7_sq72-cl" and row["samples"] > 0
    assert row["speedup"] == row["eager_us"] / row["ours_us"]
    assert row["x_roofline"] == row["ours_us"] / row["roofline_us"]
    assert isinstance(row["target_met"], bool)


def test_gemm_row_lands_in_the_benchmark_json(tmp_path):
    pytest.importorskip("pytest_benchmark")
    pytest.importorskip("onnxruntime")
    suite = tmp_path / "bench"
    suite.mkdir()
    for name in ("conftest.py", "bench_ops.py"):
        shutil.copy(os.path.join(BENCH, name), suite / name)
    out = tmp_path / "gemm.json"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench_ops.py",
         "-k", "gemm_row and small.project9_", "--bench-seconds", "0.05", f"--benchmark-json={out}"],
        cwd=suite, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(mnv3ext.__file__)))})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    benchmarks = json.loads(out.read_text())["benchmarks"]
    assert [b["name"] for b in benchmarks] == ["test_gemm_row[small.project9_c288-96_s7_se]"]
    row = benchmarks[0]["extra_info"]
    assert benchmarks[0]["group"] == "gemm rows" and row["threads"] == 1 and row["samples"] > 0
    assert row["ratio"] == row["ours_us"] / row["ort_us"] and row["max_rel_err"] < 1e-5


def test_call_overhead_script_times_every_part():
    """bench/call_overhead.py runs on the installed package and prints one row per part."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(mnv3ext.__file__)),
                                                                 os.environ.get("PYTHONPATH", "")) if p))
    done = subprocess.run([sys.executable, os.path.join(BENCH, "call_overhead.py"), "--model", "small", "--rounds", "3"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| part")]
    assert len(rows) == 9, done.stdout
    for row in rows:
        warm, cold = (float(v) for v in row.rstrip(" |").split("|")[-2:])
        assert warm >= 0 and cold >= 0, row  # numbers, no timing asserted
