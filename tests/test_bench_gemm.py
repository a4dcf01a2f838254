"""The GEMM-family benchmark (``bench-ops --kinds pw``), ONNX Runtime as a backend (defaults,
no-spin variant, profiler per block), alternating-block timing, batch > 1 and the v2 JSON schema.
Structure and correctness only: no timing assertions."""
from __future__ import annotations

import copy
import os
import json
import tempfile

import jsonschema
import numpy as np
import pytest
import torch
from torch import nn

import mnv3ext
from mnv3ext import shapes
from mnv3ext.bench.cli import main
from mnv3ext.bench.schema import BENCH_SCHEMA, validate
from mnv3ext.bench.timing import alternating_blocks, wait_until_idle

TINY = ["bench", "--model", "small", "--size", "64", "--runs", "3", "--warmup", "1", "--threads", "1", "--quiet"]


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------------------------------
# the layer list

@pytest.mark.parametrize("model", ["large", "small"])
def test_gemm_layer_list_matches_the_model(model):
    """Every dense conv of the model outside the SE blocks (stem, 1x1 convs) and every Linear, in
    forward order, with the spatial size it runs at: the same as shapes' list."""
    from mnv3ext.models import mobilenet_v3_large, mobilenet_v3_small

    net = (mobilenet_v3_large if model == "large" else mobilenet_v3_small)().eval()
    seen = []

    def hook(mod, inputs, output):
        x = inputs[0]
        if isinstance(mod, nn.Linear):
            seen.append(("linear", mod.in_features, mod.out_features, None))
        else:
            seen.append(("conv" if mod.kernel_size != (1, 1) else "pointwise", mod.in_channels, mod.out_channels,
                         x.shape[-1]))

    se = {id(m) for blk in net.modules() if type(blk).__name__ == "SqueezeExcitation" for m in blk.modules()}
    for m in net.modules():
        if id(m) in se:
            continue
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.randn(1, 3, 224, 224))
    layers = shapes.LARGE_GEMM if model == "large" else shapes.SMALL_GEMM
    expected = []
    for layer in layers:
        if layer.op == "linear":
            expected.append(("linear", layer.in_features, layer.out_features, None))
        else:
            expected.append((layer.op, layer.in_channels, layer.out_channels, layer.size))
    assert seen == expected
    pw = shapes.LARGE_PW if model == "large" else shapes.SMALL_PW
    assert [l.role for l in pw].count("last") == 1 and len({l.name for l in shapes.ALL_GEMM}) == len(shapes.ALL_GEMM)
    # a projection has a residual exactly where the block adds one, input_scale where an SE precedes it
    blocks = shapes.LARGE_BLOCKS if model == "large" else shapes.SMALL_BLOCKS
    for layer in (l for l in pw if l.role == "project"):
        cin, _, _, cout, has_se, _, stride = blocks[layer.index - 1]
        assert layer.residual == (stride == 1 and cin == cout) and layer.input_scale == has_se


# ---------------------------------------------------------------------------------------------
# one-node ORT models against our ops

def _case(name):
    from mnv3ext.bench.gemm_cases import gemm_case

    return gemm_case(next(l for l in shapes.ALL_GEMM if l.name.startswith(name)))


@pytest.mark.parametrize("name", ["large.stem", "large.project1_", "large.expand7_", "large.project5_",
                                  "small.project1_", "small.last", "large.fc1", "small.fc2"])
def test_one_node_ort_model_matches_our_op(name, tmp_path):
    pytest.importorskip("onnxruntime")
    case = _case(name)
    case.make_ort(str(tmp_path))
    import onnx

    graph = onnx.load(case.onnx_path).graph
    ops = [n.op_type for n in graph.node]
    layer = case.layer
    assert ("Gemm" if layer.op == "linear" else "Conv") in ops
    assert ("Mul" in ops) == bool(getattr(layer, "input_scale", False))
    assert ("Add" in ops) == bool(getattr(layer, "residual", False))
    assert ({"relu": "Relu", "hardswish": "HardSwish"}.get(layer.activation) in ops) or layer.activation == "none"
    err = case.errors()
    assert err["max_rel_err"] < 1e-5 and err["max_rel_err_torch"] < 1e-5, err
    ours = case.ours()
    ort = case.ort()
    assert tuple(ours.shape) == ort.shape
    np.testing.assert_allclose(ours.numpy(), ort, rtol=1e-4, atol=1e-4 * float(np.abs(ort).max()))
    if layer.op != "linear":
        assert ours.is_contiguous(memory_format=torch.channels_last)  # ours as the optimized modules run it


def test_gemm_case_macs():
    assert _case("large.expand2_").macs == 112 * 112 * 16 * 64
    assert _case("large.stem").macs == 112 * 112 * 16 * 3 * 9
    assert _case("large.fc2").macs == 1280 * 1000


# ---------------------------------------------------------------------------------------------
# the table

def test_bench_ops_pw_table(capsys, tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "pw.json"
    rc, out, _ = _run(capsys, ["bench-ops", "--kinds", "pw", "--match", "large.project5_", "--runs", "3",
                               "--warmup", "1", "--threads", "1,2", "--fma-peak", "50", "--quiet",
                               "--json", str(path)])
    assert rc == 0
    head = next(l for l in out.splitlines() if l.startswith("| layer | op |"))
    assert [c.strip() for c in head.strip("|").split("|")] == [
        "layer", "op", "C in→out", "H=W", "act", "MMAC", "ours µs", "ORT µs", "ours/ORT", "ours GMAC/s",
        "ORT GMAC/s", "ours % peak", "ORT % peak", "≤ ORT", "ORT nodes µs", "ours/ORT nodes"]
    lines = [l for l in out.splitlines() if l.startswith("| large.project5 +se +res |")]
    assert len(lines) == 2  # 1 and 2 threads
    assert "1 thread**" in out and "2 threads**" in out and "FMA peak: --fma-peak" in out
    doc = json.loads(path.read_text())
    rows = doc["gemm"]["rows"]
    assert [r["threads"] for r in rows] == [1, 2] and doc["gemm"]["fma_peak_source"] == "--fma-peak"
    for r, line in zip(rows, lines):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1:5] == ["1x1", "120→40", "28", "none"]
        assert r["residual"] and r["input_scale"] and r["macs"] == 28 * 28 * 120 * 40
        assert r["max_rel_err"] < 1e-5
        assert r["ratio"] == pytest.approx(r["ours_us"] / r["ort_us"])
        assert r["ours_gmacs"] == pytest.approx(r["macs"] / r["ours_us"] / 1e3)
        assert r["peak_gmacs"] == pytest.approx(50.0 * min(r["threads"], mnv3ext.bench.machine.physical_cores() or 2))
        assert r["ours_peak_share"] == pytest.approx(r["ours_gmacs"] / r["peak_gmacs"])
        assert r["target_met"] == (r["ratio"] <= 1.0)
        assert cells[6:9] == [f"{r['ours_us']:.1f}", f"{r['ort_us']:.1f}", f"{r['ratio']:.2f}"]
        # ORT's profiler: the layer's own nodes (Mul, Conv, Add) apart from its NCHWc reorders
        assert {"Conv", "Mul", "Add"} <= set(r["ort_ops"]) and r["ort_kernel_us"] > 0
        assert r["ratio_vs_ort_kernel"] == pytest.approx(r["ours_us"] / r["ort_kernel_us"])
        assert cells[14:16] == [f"{r['ort_kernel_us']:.1f}", f"{r['ratio_vs_ort_kernel']:.2f}"]
    assert doc["gemm"]["sums"] == []  # not all of Large's layers were run


def test_gemm_sums_and_target():
    from mnv3ext.bench.gemm_table import _derive, format_gemm_table, gemm_sums

    rows = []
    for i, layer in enumerate(shapes.LARGE_GEMM):
        ours = 10.0 if layer.op == "pointwise" else 30.0
        rows.append(_derive({"id": layer.name, "kind": "pw", "op": layer.op, "model": "large", "layer": layer.name,
                             "in_channels": 1, "out_channels": 1, "size": 1, "activation": "none",
                             "threads": 1, "macs": layer.macs, "peak_gmacs": 100.0, "ours_us": ours,
                             "ort_us": 14.0 if i != 5 else 9.0}))
    sums = gemm_sums(rows)
    pw = next(s for s in sums if s["layers"] == "pointwise")
    assert pw["count"] == len(shapes.LARGE_PW) == 30
    assert pw["ours_us"] == 300.0 and pw["layers_slower_than_ort"] == 1
    assert pw["target_met"] is False  # the sum is 0.72x but one layer is slower than ORT's
    assert next(s for s in sums if s["layers"] == "all")["target_met"] is None
    rows[5] = _derive(dict(rows[5], ort_us=14.0))
    assert next(s for s in gemm_sums(rows) if s["layers"] == "pointwise")["target_met"] is True
    text = format_gemm_table(rows, gemm_sums(rows), "test")
    assert "| **large: the 1x1 convs** | 30 |" in text and "✓ |" in text


def test_fma_peak_output_parsing_and_override():
    from mnv3ext.bench.fma import fma_peak, parse_fma_peak_output

    text = "avx2   FMA peak:   60.5 G multiply-adds/s\navx512 FMA peak:  121.0 G multiply-adds/s\n"
    assert parse_fma_peak_output(text) == {"avx2": 60.5, "avx512": 121.0}
    assert fma_peak("avx512", 42.0) == (42.0, "--fma-peak")


# ---------------------------------------------------------------------------------------------
# alternating blocks

def test_alternating_blocks_order_and_counts():
    calls = []
    fns = {n: (lambda n=n: calls.append(n)) for n in ("a", "b")}
    stats = alternating_blocks(fns, block_calls=3, warm_calls=1, warmup=2, runs=7, shuffle=False)
    warm, timed = calls[:4], calls[4:]
    assert sorted(warm) == ["a", "a", "b", "b"]
    # blocks of (1 warm + 3), (1 + 3), (1 + 1 to make 7), alternating between a and b
    sizes = [4, 4, 4, 4, 2, 2]
    chunks, k = [], 0
    for n in sizes:
        chunks.append("".join(timed[k:k + n]))
        k += n
    assert k == len(timed) and all(len(set(c)) == 1 for c in chunks)  # each block: one callable's calls
    for b in range(3):  # every block gives each callable its turn
        assert {chunks[2 * b][0], chunks[2 * b + 1][0]} == {"a", "b"}
    assert {n: (s.n, s.blocks) for n, s in stats.items()} == {"a": (7, 3), "b": (7, 3)}
    with pytest.raises(ValueError):
        alternating_blocks(fns, runs=3, seconds=1.0)
    with pytest.raises(ValueError):
        alternating_blocks(fns, block_calls=0)
    s = alternating_blocks({"x": lambda: None}, warmup=0, seconds=0.02, min_blocks=4, block_calls=2)
    assert s["x"].blocks >= 4 and s["x"].n == 2 * s["x"].blocks


def test_wait_until_idle_waits_for_a_spinning_thread_and_not_otherwise():
    """A thread burning CPU (as ONNX Runtime's pool after a call) holds the next block back until it
    stops or the cap passes; with every other thread asleep the wait ends after a window or two."""
    import threading

    assert os.path.isdir("/proc/self/task"), "wait_until_idle observes threads through Linux /proc"
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        waited = wait_until_idle(max_seconds=0.3)
    finally:
        stop.set()
        spinner.join()
    assert waited >= 0.3
    idle = threading.Thread(target=stop.wait)  # a thread that exists but sleeps
    idle.start()
    try:
        assert wait_until_idle(max_seconds=5.0) < 2.0
    finally:
        idle.join()


def test_alternating_blocks_quiesces_before_each_block(monkeypatch):
    import mnv3ext.bench.timing as timing

    waits = []
    monkeypatch.setattr(timing, "wait_until_idle", lambda: waits.append(1) or 0.0)
    alternating_blocks({"a": lambda: None, "b": lambda: None}, block_calls=2, warmup=0, runs=4, shuffle=False)
    assert len(waits) == 4  # 2 blocks x 2 callables
    waits.clear()
    alternating_blocks({"a": lambda: None}, block_calls=2, warmup=0, runs=4, quiesce=False)
    assert waits == []


# ---------------------------------------------------------------------------------------------
# ONNX Runtime: defaults, the no-spin variant, the profiler's per-block times

def test_onnxruntime_backends_default_and_nospin(capsys, tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "ort.json"
    rc, out, _ = _run(capsys, TINY + ["--backends", "eager,onnxruntime,onnxruntime-nospin", "--json", str(path)])
    assert rc == 0
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, BENCH_SCHEMA)
    by = {r["backend"]: r for r in doc["results"]}
    assert by["onnxruntime"]["details"]["allow_spinning"] is True
    assert by["onnxruntime-nospin"]["details"]["allow_spinning"] is False
    assert "| onnxruntime-nospin | " in out and "alternating blocks" in out
    for name in ("onnxruntime", "onnxruntime-nospin"):
        assert by[name]["status"] == "ok" and by[name]["max_abs_err"] < 1e-3


def test_default_backends_leave_out_the_nospin_variant():
    from mnv3ext.bench.backends import BACKENDS, DEFAULT_BACKENDS

    assert "onnxruntime" in DEFAULT_BACKENDS and "onnxruntime-nospin" not in DEFAULT_BACKENDS
    assert "onnxruntime-nospin" in BACKENDS


@pytest.mark.parametrize("model", ["small", "large"])
def test_ort_profiler_nodes_all_land_in_a_row(model, tmp_path):
    pytest.importorskip("onnxruntime")
    from mnv3ext.bench.backends import export_onnx
    from mnv3ext.bench.models import build_model, example_input, segments
    from mnv3ext.bench.ort import assign_blocks, block_of_node, per_block_us, profile_runs

    net = build_model(model)
    x = example_input(1, 64)
    path = str(tmp_path / "m.onnx")
    export_onnx(net, x, path)
    per_run = profile_runs(path, {"input": x.numpy()}, 1, 2, str(tmp_path), warmup=1)
    assert len(per_run) == 2 and len(per_run[0]) == len(per_run[1]) > 0
    rows = len(segments(net, (64, 64)))
    names = [n for n, _, _ in per_run[0]]
    assigned = assign_blocks(names, rows)
    assert len(assigned) == len(names) and all(0 <= b < rows for b in assigned)
    assert assigned == sorted(assigned)  # execution order follows the blocks
    assert set(assigned) == set(range(rows))  # every block got nodes
    scoped = [block_of_node(n, rows) for n in names]
    assert all(a == b for a, b in zip(assigned, scoped) if b is not None)
    assert sum(b is not None for b in scoped) > len(names) // 2
    res = per_block_us(per_run, rows)
    assert sum(len(n) for n in res["nodes"]) == len(names)
    assert all(v is not None and v >= 0 for v in res["median_us"])


def test_block_of_node_names():
    from mnv3ext.bench.ort import assign_blocks, block_of_node

    assert block_of_node("/features/features.0/features.0.0/Conv_output_0_nchwc", 18) == 0
    assert block_of_node("/features/features.3/block/block.2/avgpool/GlobalAveragePool", 18) == 3
    assert block_of_node("/features/features.16/features.16.0/Conv", 18) == 16
    assert block_of_node("/avgpool/GlobalAveragePool_output_0_nchwc", 18) == 17
    assert block_of_node("/classifier/classifier.0/Gemm", 18) == 17
    assert block_of_node("/Flatten", 18) == 17
    assert block_of_node("ReorderInput_token_57", 18) is None
    assert assign_blocks(["ReorderInput", "/features/features.0/x", "ReorderOutput_1",
                          "/features/features.1/y", "HardSigmoid_180"], 3) == [0, 0, 0, 1, 1]


def test_per_layer_has_ort_columns(capsys, tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "pl.json"
    rc, out, _ = _run(capsys, TINY + ["--backends", "eager,mnv3ext,onnxruntime", "--per-layer", "--json", str(path)])
    assert rc == 0
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, BENCH_SCHEMA)
    per = doc["per_layer"]
    assert per["backends"] == ["eager", "mnv3ext"]
    assert per["ort"]["onnxruntime"]["unassigned"] == 0 and per["ort"]["onnxruntime"]["nodes"] > 0
    assert sum(r["ort_nodes"]["onnxruntime"] for r in per["rows"]) == per["ort"]["onnxruntime"]["nodes"]
    assert all(r["ort_us"]["onnxruntime"] is not None for r in per["rows"])
    assert per["ort"]["onnxruntime"]["total_us"] == pytest.approx(sum(r["ort_us"]["onnxruntime"] for r in per["rows"]))
    head = next(l for l in out.splitlines() if l.startswith("| # | block |"))
    assert "onnxruntime µs (profiler)" in head and "mnv3ext/onnxruntime" in head
    row = next(l for l in out.splitlines() if l.startswith("| 4 | ir4 "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == head.count("|") - 1
    r4 = per["rows"][4]
    column = dict(zip([c.strip() for c in head.strip("|").split("|")], cells))
    assert column["onnxruntime µs (profiler)"] == f"{r4['ort_us']['onnxruntime']:.1f}"
    assert column["mnv3ext/onnxruntime"] == f"{r4['median_ms']['mnv3ext'] * 1e3 / r4['ort_us']['onnxruntime']:.2f}"
    # the in-model column: ORT's per-block time scaled by its unprofiled whole-model time over its
    # profiled node total
    whole = next(r for r in doc["results"] if r["backend"] == "onnxruntime")["latency_ms"]["median"] * 1e3
    scaled = r4["ort_us"]["onnxruntime"] * whole / per["ort"]["onnxruntime"]["run_total_us"]
    assert column["mnv3ext in-model µs"] == f"{r4['in_model_us']:.1f}"
    assert column["in-model/onnxruntime (scaled)"] == f"{r4['in_model_us'] / scaled:.2f}"


# ---------------------------------------------------------------------------------------------
# batch > 1 for every backend (torch.compile ones aside: minutes of compilation)

def test_batch_runs_on_every_backend(capsys, tmp_path):
    from mnv3ext.bench.backends import BACKENDS

    names = [b for b in BACKENDS if "compile" not in b]
    path = tmp_path / "b.json"
    argv = ["bench", "--model", "small", "--size", "64", "--batch", "3", "--runs", "2", "--warmup", "1",
            "--threads", "1", "--quiet", "--backends", ",".join(names), "--json", str(path)]
    rc, out, _ = _run(capsys, argv)
    assert rc == 0
    doc = json.loads(path.read_text())
    validate(doc)
    for r in doc["results"]:
        assert r["status"] in ("ok", "skipped"), r  # skipped: an optional runtime not installed
        if r["status"] == "ok":
            assert r["top1_agreement"] == 1.0 and r["max_rel_err"] < 1e-4
            assert r["images_per_second"] == pytest.approx(3e3 / r["latency_ms"]["median"])


# ---------------------------------------------------------------------------------------------
# schema versions

def test_schema_v2_and_v1_files_are_readable():
    from mnv3ext.bench.schema import SCHEMA_VERSION

    assert SCHEMA_VERSION == 2
    base = {"schema": "mnv3ext-bench", "schema_version": 1, "created": "x", "label": None,
            "machine": {"cpu_model": "c", "arch": "x86_64", "logical_cores": 2, "isa_detected": "avx2",
                        "isa_in_use": "avx2", "threads": 1, "torch_version": "t", "numpy_version": "n",
                        "mnv3ext_version": "m", "python_version": "p"},
            "settings": {"model": "small", "width": 1.0, "batch": 1, "size": 64, "threads": 1, "warmup": 1,
                         "runs": 3, "seconds": None, "backends": ["eager"], "per_layer": False, "seed": 0},
            "results": [], "per_layer": None}
    validate(base)  # a version-1 file (no timing / block_calls) still reads
    v2 = copy.deepcopy(base)
    v2["schema_version"] = 2
    v2["settings"].update(timing="alternating-blocks", block_calls=5)
    validate(v2)
    v2["settings"]["block_calls"] = 0
    with pytest.raises(Exception):
        validate(v2)
