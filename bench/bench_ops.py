"""Per-op pytest-benchmark suite: every depthwise and SE layer of MobileNetV3-Large/-Small at
224x224 (``mnv3ext.shapes``), NCHW and channels_last, 1 thread by default: our op against the eager
sequence it replaces. The cases are :mod:`mnv3ext.bench.opcases`, the same the op table
(``python -m mnv3ext bench-ops``, interleaved, with the roofline) times.

    python3 -m pytest bench/bench_ops.py [-k large.dw13] [--benchmark-json out.json]

Each (layer, layout) is one pytest-benchmark group holding ``eager``, ``ours`` (the eager entry
point the fused modules call) and ``via_ops`` (the same op through torch.ops); extra_info
carries the bytes moved and the single-thread copy bandwidth at that working-set size.
pytest-benchmark times each of them in a loop of its own; ``test_interleaved_row`` measures the
op table's row instead (all candidates and the copy roofline interleaved in one loop, medians,
``--bench-seconds`` per case) and puts it in extra_info (group ``interleaved rows``): those are
the numbers the targets are judged on. ``test_gemm_row`` measures a row of the GEMM table
(``bench-ops --kinds pw``: ours vs ONNX Runtime on a one-node model, group ``gemm rows``).
"""
from __future__ import annotations

import pytest

from mnv3ext import shapes
from mnv3ext.bench.bandwidth import copy_bandwidth
from mnv3ext.bench.op_table import measure_cases
from mnv3ext.bench.opcases import LAYOUTS, case_id, dw_case, se_case

CASES = [(make, layer, layout) for make, layers in ((dw_case, shapes.ALL_DW), (se_case, shapes.ALL_SE))
         for layer in layers for layout in LAYOUTS]
PARAMS = [pytest.param(make, layer, layout, impl, id=f"{case_id(layer, layout)}-{impl}")
          for make, layer, layout in CASES for impl in ("eager", "ours", "via_ops")]
ROWS = [pytest.param(make, layer, layout, id=case_id(layer, layout)) for make, layer, layout in CASES]
ROW_FIELDS = ("eager_us", "ours_us", "via_ops_us", "roofline_us", "hot_copy_us", "speedup", "gbps", "copy_gbps",
              "x_roofline", "target_met", "samples")

_cases = {}


def _case(make, layer, layout):
    key = (layer, layout)
    if key not in _cases:
        _cases[key] = make(layer, layout)
    return _cases[key]


@pytest.mark.parametrize("make,layer,layout,impl", PARAMS)
def test_op(benchmark, make, layer, layout, impl):
    case = _case(make, layer, layout)
    assert case.max_abs_error() < 1e-4, "ours disagrees with eager"
    benchmark.group = case.id
    benchmark.extra_info.update(bytes=case.bytes_moved, copy_gbps=copy_bandwidth(case.bytes_moved) / 1e9,
                                kind=case.kind, layout=layout)
    out = benchmark(getattr(case, impl))
    assert out.shape[1] == layer.channels


@pytest.mark.parametrize("make,layer,layout", ROWS)
def test_interleaved_row(benchmark, bench_seconds, make, layer, layout):
    case = _case(make, layer, layout)
    benchmark.group = "interleaved rows"  # read by pedantic(): set it first
    # One measurement of the whole row; pytest-benchmark's own time for it is the budget spent.
    rows = benchmark.pedantic(measure_cases, args=([case],), kwargs={"seconds": bench_seconds},
                              rounds=1, iterations=1)
    row = rows[0]
    assert row["max_abs_err"] < 1e-4, "ours disagrees with eager"
    benchmark.extra_info.update({"id": case.id, "bytes": case.bytes_moved},
                                **{k: row[k] for k in ROW_FIELDS})


# The GEMM family (bench-ops --kinds pw): per 1x1 conv / stem / classifier layer, ours against
# ONNX Runtime on a one-node model, in alternating blocks, as the table measures it.
GEMM_ROWS = [pytest.param(layer, id=layer.name) for layer in shapes.ALL_GEMM]
GEMM_FIELDS = ("ours_us", "ort_us", "ratio", "ours_gmacs", "ort_gmacs", "macs", "target_met", "samples",
               "max_rel_err")


@pytest.mark.parametrize("layer", GEMM_ROWS)
def test_gemm_row(benchmark, bench_seconds, bench_threads, tmp_path, layer):
    pytest.importorskip("onnxruntime")
    from mnv3ext.bench.gemm_cases import gemm_case
    from mnv3ext.bench.gemm_table import measure_gemm_cases
    from mnv3ext.bench.op_table import num_threads

    benchmark.group = "gemm rows"
    with num_threads(bench_threads):
        case = gemm_case(layer, threads=bench_threads)
        case.make_ort(str(tmp_path))
        rows = benchmark.pedantic(measure_gemm_cases, args=([case],),
                                  kwargs={"threads": bench_threads, "peak_gmacs": None, "seconds": bench_seconds},
                                  rounds=1, iterations=1)
    row = rows[0]
    assert row["max_rel_err"] < 1e-5, "ours disagrees with ONNX Runtime"
    benchmark.extra_info.update({"id": case.id, "threads": bench_threads}, **{k: row[k] for k in GEMM_FIELDS})
