"""The benchmark CLI (``python -m mnv3ext bench|info|report|bench-ops|bench-neighbours``) end to
end, on tiny configurations, plus the measurement helpers it is built on. No torch.compile here
(slow)."""
from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import time

import jsonschema
import pytest
import torch

import mnv3ext
from mnv3ext.bench import backends as backends_mod
from mnv3ext.bench.cli import main
from mnv3ext.bench.schema import BENCH_SCHEMA, MACHINE_SCHEMA, SchemaError, validate
from mnv3ext.bench.timing import interleaved, percentile, summarize

TINY = ["bench", "--model", "small", "--size", "64", "--runs", "3", "--warmup", "1", "--threads", "1", "--quiet"]


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One bench run shared by several tests: eager, eager-cl, mnv3ext, with --per-layer and --json."""
    path = tmp_path_factory.mktemp("bench") / "small.json"
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(TINY + ["--backends", "eager,eager-cl,mnv3ext", "--per-layer", "--json", str(path),
                          "--label", "tiny-run"])
    with open(path) as f:
        doc = json.load(f)
    return rc, buf.getvalue(), doc, path


# ---------------------------------------------------------------------------------------------
# bench

def test_bench_end_to_end_json_validates(tiny_run):
    rc, out, doc, _ = tiny_run
    assert rc == 0
    jsonschema.validate(doc, BENCH_SCHEMA)  # the documented schema, checked by jsonschema itself
    validate(doc)
    assert doc["settings"]["model"] == "small" and doc["settings"]["size"] == 64
    # 3 timed calls per backend: one alternating block (5 calls per block by default, shortened)
    assert doc["settings"]["runs"] == 3 and doc["settings"]["rounds"] == 1
    assert doc["settings"]["timing"] == "alternating-blocks" and doc["settings"]["block_calls"] == 5
    assert doc["schema_version"] == 2
    assert doc["machine"]["isa_in_use"] == mnv3ext.current_isa()
    assert [r["backend"] for r in doc["results"]] == ["eager", "eager-cl", "mnv3ext"]
    for r in doc["results"]:
        assert r["status"] == "ok", r
        lat = r["latency_ms"]
        assert lat["n"] == 3
        assert 0 < lat["p10"] <= lat["median"] <= lat["p90"]
        assert r["images_per_second"] == pytest.approx(1e3 / lat["median"])
        assert r["max_abs_err"] < 1e-3 and r["top1_agreement"] == 1.0
    eager = doc["results"][0]
    assert eager["speedup_vs_eager"] == pytest.approx(1.0) and eager["max_abs_err"] == 0.0


def test_bench_prints_header_and_table(tiny_run):
    _, out, doc, _ = tiny_run
    assert "CPU:" in out and "ISA:" in out and f"torch {torch.__version__}" in out
    assert "MobileNetV3-Small, batch 1, 64×64, 1 thread" in out
    assert "| backend | median ms | p10 ms | p90 ms | images/s | vs eager | max abs err | top-1 agree |" in out
    for name in ("eager", "eager-cl", "mnv3ext"):
        assert f"\n| {name} | " in out
    assert "\r" not in out  # no progress bar (not a terminal, and --quiet)


def test_bench_per_layer_table(tiny_run):
    _, out, doc, _ = tiny_run
    per = doc["per_layer"]
    assert per["backends"] == ["eager", "eager-cl", "mnv3ext"]
    names = [r["name"] for r in per["rows"]]
    # Small: stem, 11 inverted residuals, last 1x1 conv, head
    assert len(names) == 14 and names[0] == "stem" and names[-2:] == ["last 1x1 conv", "head"]
    assert names[1] == "ir1 k3 e16 s2 se" and names[4] == "ir4 k5 e96 s2 se"
    for r in per["rows"]:
        assert set(r["median_ms"]) == {"eager", "eager-cl", "mnv3ext"}
        assert all(v > 0 for v in r["median_ms"].values())
        assert not r["notes"], r["notes"]  # every block optimized
    assert per["total_ms"]["eager"] == pytest.approx(sum(r["median_ms"]["eager"] for r in per["rows"]))
    assert "| 4 | ir4 k5 e96 s2 se | " in out and "**sum of blocks**" in out
    # mnv3ext's steps timed inside the whole model's one sequential op, charged to the same rows
    assert all(r["in_model_us"] > 0 for r in per["rows"]), [r.get("in_model_us") for r in per["rows"]]
    assert per["in_model"]["total_us"] == pytest.approx(sum(r["in_model_us"] for r in per["rows"]))
    assert per["in_model"]["runs"] > 0 and "mnv3ext in-model µs" in out


def test_missing_optional_runtimes_are_skipped(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "openvino", None)
    rc, out, err = _run(capsys, TINY + ["--backends", "eager,onnxruntime,openvino"])
    assert rc == 0
    assert "| eager | " in out
    assert "skipped: onnxruntime — onnxruntime is not installed" in out
    assert "skipped: openvino — openvino is not installed" in out


def test_skipped_and_failing_backends_in_json(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)

    def broken(ctx):
        raise RuntimeError("simulated failure\nsecond line")

    monkeypatch.setitem(backends_mod.BACKENDS, "eager-cl", broken)
    path = tmp_path / "r.json"
    rc, out, err = _run(capsys, TINY + ["--backends", "eager,eager-cl,onnxruntime", "--json", str(path)])
    assert rc == 0
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, BENCH_SCHEMA)
    by = {r["backend"]: r for r in doc["results"]}
    assert by["eager"]["status"] == "ok"
    assert by["eager-cl"]["status"] == "error" and by["eager-cl"]["reason"] == "RuntimeError: simulated failure"
    assert by["onnxruntime"]["status"] == "skipped" and "pip install onnxruntime" in by["onnxruntime"]["reason"]
    assert by["onnxruntime"]["latency_ms"] is None
    assert "error: eager-cl — RuntimeError: simulated failure" in out


def test_all_backends_failing_exits_nonzero(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)
    rc, out, err = _run(capsys, TINY + ["--backends", "openvino"])
    assert rc == 1
    assert "(no backend ran)" in out


def test_onnxruntime_backend_if_installed(capsys):
    pytest.importorskip("onnxruntime")
    rc, out, err = _run(capsys, TINY + ["--backends", "eager,onnxruntime"])
    assert rc == 0
    line = next(l for l in out.splitlines() if l.startswith("| onnxruntime |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert float(cells[1]) > 0 and float(cells[6]) < 1e-3  # median ms, max abs err


def test_bench_module_entry_point(tmp_path):
    """``python -m mnv3ext bench`` as a user runs it: separate process, stdout not a terminal."""
    path = tmp_path / "e.json"
    # The mnv3ext this test imported (in-tree build or installed wheel), not the bare source tree.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(mnv3ext.__file__)))
    env = dict(os.environ, PYTHONPATH=package_parent + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "mnv3ext", "bench", "--model", "small", "--size", "48", "--runs",
                           "2", "--warmup", "1", "--backends", "eager", "--json", str(path)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| eager | " in proc.stdout
    assert "\r[" not in proc.stderr  # progress bar only on a terminal
    validate(json.loads(path.read_text()))


# ---------------------------------------------------------------------------------------------
# bad arguments: argparse usage errors (exit 2), never a traceback

@pytest.mark.parametrize("argv", [
    ["bench", "--runs", "0"],
    ["bench", "--runs", "three"],
    ["bench", "--seconds", "-1"],
    ["bench", "--runs", "3", "--seconds", "1"],
    ["bench", "--model", "medium"],
    ["bench", "--backends", "eager,tensorrt"],
    ["bench", "--backends", ","],
    ["bench", "--threads", "0"],
    ["bench", "--size", "8"],
    ["bench", "--width", "0"],
    ["bench", "--model", "lraspp", "--width", "0.5"],
    ["bench", "--batch", "-2"],
    ["bench", "--no-such-option"],
    ["bench", "--isa", "sse9"],
    ["report"],
    ["bench-ops", "--layouts", "nhcw"],
    ["bench-neighbours", "--rounds", "0"],
    ["bench-neighbours", "--kinds", "pw"],
    ["bench-neighbours", "--match", "no.such.layer"],
    ["frobnicate"],
])
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "error:" in err
    assert "Traceback" not in err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "bench" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# info

def test_info_prints_header(capsys):
    rc, out, err = _run(capsys, ["info", "--threads", "1"])
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("CPU:")
    assert any(l.startswith("Cores:") for l in lines)
    isa_line = next(l for l in lines if l.startswith("ISA:"))
    assert f"{mnv3ext.current_isa()} in use" in isa_line and f"detected best: {mnv3ext.best_isa()}" in isa_line
    assert f"mnv3ext {mnv3ext.__version__}, torch {torch.__version__}" in out
    assert "Threads:  1" in out


def test_info_json_matches_machine_schema(capsys):
    rc, out, err = _run(capsys, ["info", "--json"])
    assert rc == 0
    info = json.loads(out)
    jsonschema.validate(info, MACHINE_SCHEMA)
    assert info["threads"] == torch.get_num_threads()
    assert info["isa_available"] == mnv3ext.available_isas()


# ---------------------------------------------------------------------------------------------
# report

def _second_run(doc):
    other = copy.deepcopy(doc)
    other["label"] = "board-b"
    other["machine"]["cpu_model"] = "Cortex-A76 (Raspberry Pi 5)"
    other["machine"]["arch"] = "aarch64"
    other["machine"]["isa_in_use"] = "neon"
    other["settings"]["threads"] = 4
    other["results"].append({"backend": "onnxruntime", "status": "skipped", "reason": "onnxruntime is not installed",
                             "latency_ms": None})
    for r in other["results"]:
        if r["status"] == "ok":
            r["latency_ms"] = {k: v * 3 if k not in ("n", "number") else v for k, v in r["latency_ms"].items()}
    return other


def test_report_merges_two_files(tiny_run, tmp_path, capsys):
    _, _, doc, path_a = tiny_run
    path_b = tmp_path / "b.json"
    other = _second_run(doc)
    jsonschema.validate(other, BENCH_SCHEMA)
    path_b.write_text(json.dumps(other))
    rc, out, err = _run(capsys, ["report", str(path_a), str(path_b)])
    assert rc == 0
    lines = out.splitlines()
    head = next(l for l in lines if l.startswith("| machine |"))
    assert head == "| machine | model | ISA | threads | eager | eager-cl | mnv3ext | onnxruntime |"
    row_a = next(l for l in lines if l.startswith("| [1] tiny-run |"))
    row_b = next(l for l in lines if l.startswith("| [2] board-b |"))
    eager_a = doc["results"][0]["latency_ms"]["median"]
    assert f"| {eager_a:.2f} |" in row_a and f"| {mnv3ext.current_isa()} | 1 |" in row_a
    assert f"| {eager_a * 3:.2f} |" in row_b and "| neon | 4 |" in row_b
    assert row_a.rstrip().endswith("|  |")  # run A has no onnxruntime column value
    assert "| skipped |" in row_b and "[2] onnxruntime skipped: onnxruntime is not installed" in out


def test_report_output_file_and_plot(tiny_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _, _, doc, path_a = tiny_run
    path_b = tmp_path / "b.json"
    path_b.write_text(json.dumps(_second_run(doc)))
    md, png = tmp_path / "r.md", tmp_path / "r.png"
    rc, out, err = _run(capsys, ["report", str(path_a), str(path_b), "-o", str(md), "--plot", str(png)])
    assert rc == 0
    assert "| [2] board-b |" in md.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_plot_without_matplotlib(tiny_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    _, _, _, path_a = tiny_run
    with pytest.raises(SystemExit) as exc:
        main(["report", str(path_a), "--plot", "x.png"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--plot needs matplotlib, which is not installed" in err and "Traceback" not in err


def test_report_rejects_foreign_json(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(SystemExit) as exc:
        main(["report", str(bad)])
    assert exc.value.code == 2
    assert "not an mnv3ext bench result" in capsys.readouterr().err


def test_schema_rejects_inconsistent_results(tiny_run):
    _, _, doc, _ = tiny_run
    bad = copy.deepcopy(doc)
    bad["results"][0]["latency_ms"] = None  # status ok without latency
    with pytest.raises(SchemaError):
        validate(bad)
    bad = copy.deepcopy(doc)
    bad["schema_version"] = 99
    with pytest.raises(SchemaError, match="schema_version 99"):
        validate(bad)
    bad = copy.deepcopy(doc)
    bad["results"][1]["status"] = "fine"
    with pytest.raises(SchemaError, match="results/1/status"):
        validate(bad)


# ---------------------------------------------------------------------------------------------
# bench-ops (one tiny case)

def test_bench_ops_table(capsys, tmp_path):
    path = tmp_path / "ops.json"
    rc, out, err = _run(capsys, ["bench-ops", "--match", "large.dw14", "--layouts", "cl", "--runs", "3",
                                 "--warmup", "1", "--quiet", "--json", str(path)])
    assert rc == 0
    row = next(l for l in out.splitlines() if l.startswith("| large.dw14 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:6] == ["960", "7", "5", "1", "NHWC"]
    rows = json.loads(path.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["max_abs_err"] < 1e-4
    r = rows[0]
    assert r["bytes"] == (960 * 49 * 2 + 960 * 26) * 4
    assert r["speedup"] == pytest.approx(r["eager_us"] / r["ours_us"])
    assert r["x_roofline"] == pytest.approx(r["ours_us"] / r["roofline_us"])
    assert r["copy_gbps"] == pytest.approx(r["bytes"] / r["roofline_us"] / 1e3)
    assert r["via_ops_us"] > 0 and r["hot_copy_us"] > 0 and r["roofline_us"] > 0
    # The table shows ours, torch.ops, the roofline and the hot copy as the JSON has them.
    assert cells[8:10] == [f"{r['ours_us']:.1f}", f"{r['via_ops_us']:.1f}"]
    assert cells[12:15] == [f"{r['roofline_us']:.1f}", f"{r['x_roofline']:.2f}", f"{r['hot_copy_us']:.1f}"]
    assert f"Kernels: {mnv3ext.current_isa()}." in out


def test_bench_ops_passes_take_medians_per_case():
    from mnv3ext.bench.op_table import merge_passes

    def row(eager, ours, roof):
        return {"id": "x", "kind": "se", "bytes": 1000, "eager_us": eager, "ours_us": ours,
                "via_ops_us": ours + 1, "roofline_us": roof, "hot_copy_us": roof, "max_abs_err": 1e-7,
                "target_met": False}

    merged = merge_passes([[row(30.0, 12.0, 5.0)], [row(90.0, 20.0, 9.0)], [row(33.0, 10.0, 4.0)]])
    r = merged[0]
    assert (r["eager_us"], r["ours_us"], r["roofline_us"]) == (33.0, 12.0, 5.0)
    assert r["speedup"] == pytest.approx(33.0 / 12.0) and r["x_roofline"] == pytest.approx(12.0 / 5.0)
    assert r["target_met"] is False and [p["eager_us"] for p in r["passes"]] == [30.0, 90.0, 33.0]
    assert merge_passes([[row(30.0, 9.0, 5.0)], [row(33.0, 10.0, 4.0)]])[0]["target_met"] is True


def test_bench_ops_two_passes(capsys):
    rc, out, _ = _run(capsys, ["bench-ops", "--match", "small.se9", "--layouts", "cl", "--runs", "3",
                               "--warmup", "1", "--passes", "2", "--quiet"])
    assert rc == 0 and "median over 2 passes" in out and "| small.se9 |" in out


# ---------------------------------------------------------------------------------------------
# bench-neighbours

def test_bench_neighbours_table(capsys):
    rc, out, _ = _run(capsys, ["bench-neighbours", "--match", "small.se9", "--layouts", "cl", "--rounds", "3"])
    assert rc == 0
    assert f"ISA:      {mnv3ext.current_isa()} in use" in out and "Threads:  1" in out
    row = next(l for l in out.splitlines() if l.startswith("| small.se9_c288_s7_sq72-cl |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    ours, eager, sweep = (float(c) for c in cells[1:4])
    assert ours > 0 and eager > 0 and sweep > 0
    assert cells[4].endswith("×")  # from unrounded times: the shown ones are rounded to 0.1 µs
    assert float(cells[4][:-1]) == pytest.approx(eager / ours, rel=0.02, abs=0.01)


def test_neighbours_time_only_ours_after_each_neighbour():
    from types import SimpleNamespace

    from mnv3ext.bench.neighbours import measure_neighbours

    state = {"after_eager": False, "eager_calls": 0, "ours_calls": 0}

    def eager():
        state["eager_calls"] += 1
        state["after_eager"] = True

    def ours():  # slow only right after eager: its time must land in the eager column alone
        state["ours_calls"] += 1
        if state["after_eager"]:
            time.sleep(0.003)
        state["after_eager"] = False

    rows = measure_neighbours([SimpleNamespace(id="stub", ours=ours, eager=eager)], rounds=4, warmup=1)
    r = rows[0]
    assert r["id"] == "stub"
    assert r["after_eager_us"] > 2500 and r["after_ours_us"] < 1000 and r["after_sweep_us"] < 1000
    assert state["eager_calls"] == 5  # one per round, warm-up included
    assert state["ours_calls"] == 5 * 3 + 5  # timed once per neighbour per round, plus as a neighbour
    with pytest.raises(ValueError, match="rounds"):
        measure_neighbours([], rounds=0)


# ---------------------------------------------------------------------------------------------
# timing helpers

def test_percentiles():
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 10) == pytest.approx(1.4)
    assert percentile([0.0, 10.0], 90) == pytest.approx(9.0)
    s = summarize([5.0, 1.0, 3.0])
    assert (s.median, s.min, s.max, s.n) == (3.0, 1.0, 5.0, 3)


def test_interleaved_round_robin_excludes_warmup():
    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    stats = interleaved(fns, warmup=2, runs=5)
    assert len(calls) == 3 * 7
    for k in range(7):  # every round calls each callable exactly once
        assert sorted(calls[3 * k:3 * k + 3]) == ["a", "b", "c"]
    assert {n: s.n for n, s in stats.items()} == {"a": 5, "b": 5, "c": 5}
    import gc

    assert gc.isenabled()  # switched off only during the timed rounds
    with pytest.raises(ValueError):
        interleaved(fns, runs=3, seconds=1.0)


def test_interleaved_seconds_budget():
    stats = interleaved({"x": lambda: None}, warmup=0, seconds=0.05, min_runs=4)
    assert stats["x"].n >= 4


def test_progress_only_on_terminals():
    from mnv3ext.bench.progress import Progress

    plain = io.StringIO()
    p = Progress(stream=plain)
    p.update(0.5, "half", force=True)
    assert plain.getvalue() == ""

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    p = Progress(stream=tty)
    p.update(0.5, "half", force=True)
    assert "50%" in tty.getvalue() and "half" in tty.getvalue()
    assert Progress(enabled=False, stream=Tty()).enabled is False
