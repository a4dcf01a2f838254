"""``--per-layer``: latency of every block of the model (stem, each inverted residual, the last 1x1
conv, the head), per backend -- the per-layer latency lookup table NetAdapt-style search consumes.

Each backend's blocks are run once as a chain on the benchmark input to capture the input every
block sees inside that backend's model (so layouts between blocks are the backend's own), then
all (block, backend) pairs are timed in alternating blocks (a warm call, then 5 timed calls per
pair and block), warm-up excluded, medians.
For the mnv3ext backends each block is ``mnv3ext.optimize``d on its own, with the backend's
memory format: the optimized whole model is one flat graph, whose fusions never cross a block.

ONNX Runtime's per-block times (:func:`add_ort_per_block`) come from its profiler instead: the
session (default options, as in the whole-model bench) runs the whole model with
``enable_profiling``; each node's kernel time in the JSON trace is charged to a block by its ONNX
scope name (:mod:`mnv3ext.bench.ort`), per run summed per block, medians over the runs. They are
kernel times inside one whole-model run (no per-call Python/session overhead, the NCHWc layout
carried between blocks), which the standalone blocks of the torch backends cannot have.
"""
from __future__ import annotations

import statistics
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .backends import BackendUnavailable, _optimize_fn
from .models import Segment, fold_batchnorms, segments
from .timing import alternating_blocks

__all__ = ["PER_LAYER_BACKENDS", "measure_per_layer", "add_ort_per_block", "add_in_model_steps", "format_per_layer"]

# backend -> (memory format of its input, how its blocks are made from the eager model's blocks)
PER_LAYER_BACKENDS = ("eager", "eager-cl", "mnv3ext", "mnv3ext-cl", "mnv3ext-nchw")
_CL = torch.channels_last
_NCHW = torch.contiguous_format


def _backend_segments(name: str, model: torch.nn.Module, image_size) -> Tuple[List[Segment], Dict[str, str], Any]:
    """(segments, notes per segment name, input memory format) of backend ``name``."""
    notes: Dict[str, str] = {}
    if name == "eager":
        return segments(model, image_size), notes, _NCHW
    if name == "eager-cl":
        return segments(fold_batchnorms(model).to(memory_format=_CL), image_size), notes, _CL
    optimize = _optimize_fn()
    fmt = {"mnv3ext": None, "mnv3ext-cl": _CL, "mnv3ext-nchw": _NCHW}[name]
    segs = []
    for seg in segments(model, image_size):
        try:
            mod = optimize(seg.module) if fmt is None else optimize(seg.module, memory_format=fmt)
        except Exception as e:  # noqa: BLE001 - keep the eager block, say why
            mod = seg.module
            notes[seg.name] = f"not optimized: {type(e).__name__}: {e}".splitlines()[0][:200]
        segs.append(Segment(seg.name, mod, seg.inputs))
    return segs, notes, (_CL if fmt is _CL else _NCHW)


def measure_per_layer(model: torch.nn.Module, x: torch.Tensor, backends: Sequence[str], *, warmup: int = 3,
                      runs: Optional[int] = None, seconds: Optional[float] = None,
                      progress: Optional[Callable[[float, str], None]] = None) -> Dict[str, Any]:
    """The ``per_layer`` object of the JSON schema for ``backends`` (those of PER_LAYER_BACKENDS)."""
    unavailable: Dict[str, str] = {}
    chains: Dict[str, List[Segment]] = {}
    notes: Dict[str, Dict[str, str]] = {}
    inputs: Dict[str, List[tuple]] = {}
    names: Optional[List[str]] = None
    for b in backends:
        if b not in PER_LAYER_BACKENDS:
            unavailable[b] = "per-layer timing covers the eager and mnv3ext module backends only"
            continue
        try:
            segs, seg_notes, fmt = _backend_segments(b, model, x.shape[-2:])
            outs: List[Any] = [x.contiguous(memory_format=fmt)]
            seg_inputs = []
            with torch.inference_mode():
                for seg in segs:
                    args = seg.inputs(outs)
                    seg_inputs.append(args)
                    outs.append(seg.module(*args))
        except BackendUnavailable as e:
            unavailable[b] = str(e)
            continue
        except Exception as e:  # noqa: BLE001
            unavailable[b] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            continue
        chains[b], notes[b], inputs[b] = segs, seg_notes, seg_inputs
        names = names or [s.name for s in segs]
    fns: Dict[str, Callable[[], Any]] = {}
    for b, segs in chains.items():
        for i, (seg, args) in enumerate(zip(segs, inputs[b])):
            fns[f"{b}\0{i}"] = (lambda m=seg.module, a=args: m(*a))
    stats = {}
    if fns:
        with torch.inference_mode():
            # blocks, not call by call: pools that spin after a call (torch's OpenMP, ours for
            # MNV3EXT_SPIN_US) would otherwise charge their spinning to the next (block, backend)
            stats = alternating_blocks(fns, warmup=warmup, runs=runs, seconds=seconds, progress=progress)
    rows = []
    for i, name in enumerate(names or []):
        row: Dict[str, Any] = {"index": i, "name": name, "median_ms": {}, "p10_ms": {}, "p90_ms": {}, "notes": {}}
        for b in chains:
            s = stats[f"{b}\0{i}"]
            row["median_ms"][b] = s.median * 1e3
            row["p10_ms"][b] = s.p10 * 1e3
            row["p90_ms"][b] = s.p90 * 1e3
            if name in notes[b]:
                row["notes"][b] = notes[b][name]
        rows.append(row)
    total = {b: sum(r["median_ms"][b] for r in rows) for b in chains}
    return {"backends": list(chains), "unavailable": unavailable, "rows": rows, "total_ms": total}


def add_ort_per_block(per_layer: Dict[str, Any], ctx, backends: Sequence[str], *, runs: int = 50,
                      warmup: int = 3, log: Callable[[str], None] = lambda msg: None) -> None:
    """Adds ONNX Runtime's per-block times (profiler) to ``per_layer`` in place: per row
    ``ort_us`` {backend: µs} and ``ort_nodes`` {backend: node count}, and ``per_layer["ort"]``
    {backend: {runs, total_us (sum of the rows' medians), run_total_us (median over runs of all
    node times), nodes, unassigned}} (``unassigned``: nodes no row took; always 0, as
    every node goes to a row). ``backends``: onnxruntime and/or onnxruntime-nospin."""
    from .ort import per_block_us, profile_runs

    onnx = ctx._onnx
    if "path" not in onnx:
        return
    rows = per_layer["rows"]
    info = per_layer.setdefault("ort", {})
    for b in backends:
        try:
            feed = {"input": ctx.x.numpy()}
            per_run = profile_runs(onnx["path"], feed, ctx.threads, max(3, min(runs, 200)), ctx.workdir,
                                   warmup=warmup, spinning=(b != "onnxruntime-nospin"))
        except Exception as e:  # noqa: BLE001 - the torch rows stay
            per_layer.setdefault("unavailable", {})[b] = f"profiler: {type(e).__name__}: {e}".splitlines()[0][:300]
            log(f"ONNX Runtime profiler ({b}): {e}")
            continue
        blocks = per_block_us(per_run, len(rows))
        for r, us, nodes in zip(rows, blocks["median_us"], blocks["nodes"]):
            r.setdefault("ort_us", {})[b] = us
            r.setdefault("ort_nodes", {})[b] = len(nodes)
        info[b] = {"runs": blocks["runs"], "total_us": blocks["total_us"], "run_total_us": blocks["run_total_us"],
                   "nodes": sum(len(n) for n in blocks["nodes"]), "unassigned": 0}


def _row_of_layer(name: str, rows: int) -> Optional[int]:
    """The row of an optimized MobileNetV3's layer: features.0 the stem, features.i block i (the
    last one the last 1x1 conv), anything after the features (pool, classifier) the head."""
    parts = name.split(".")
    if parts[0] == "features":
        i = int(parts[1])
        return i if i < rows - 1 else None
    return rows - 1


def add_in_model_steps(per_layer: Dict[str, Any], opt: torch.nn.Module, x: torch.Tensor, *, runs: int = 50,
                       warmup: int = 3) -> bool:
    """Adds mnv3ext's per-block times *inside* the whole optimized model ``opt`` (``optimize(m)``)
    to ``per_layer`` in place (rows' ``in_model_us``, ``per_layer["in_model"]``): it runs as one
    ``sequential`` op whose steps are timed in C++ on every call, back to back, as ONNX Runtime's
    profiler times its nodes. Returns False (nothing added) when the optimized model is not one
    sequence of the features and head (LR-ASPP)."""
    from .._sequence_ops import recording_step_times
    from ..nn.sequence import FusedSequence

    seqs = [m for m in opt.modules() if isinstance(m, FusedSequence)]
    graph = getattr(opt, "graph", None)
    rows = per_layer["rows"]
    if len(seqs) != 1 or graph is None or sum(n.op.startswith("call") for n in graph.nodes) != 1:
        return False
    program_rows = {j: _row_of_layer(name, len(rows)) for j, name in seqs[0].layer_steps().items()}
    if None in program_rows.values() or len(set(program_rows.values())) != len(rows):
        return False
    with torch.inference_mode():
        for _ in range(warmup):
            opt(x)
        with recording_step_times() as records:
            for _ in range(runs):
                opt(x)
    per_row: List[List[float]] = [[] for _ in rows]
    for record in records:
        sums = [0.0] * len(rows)
        for j, ns in record:
            sums[program_rows[j]] += ns / 1e3
        for r, us in zip(per_row, sums):
            r.append(us)
    for row, values in zip(rows, per_row):
        row["in_model_us"] = statistics.median(values)
    per_layer["in_model"] = {"runs": len(records), "total_us": sum(statistics.median(v) for v in per_row),
                             "run_total_us": statistics.median(sum(ns for _, ns in r) / 1e3 for r in records)}
    return True


def format_per_layer(per_layer: Dict[str, Any], whole_model_ms: Optional[Dict[str, float]] = None) -> str:
    """Markdown table: one row per block, one column per backend (ms), plus sum and whole model."""
    backends = per_layer["backends"]
    ort = list(per_layer.get("ort") or {})
    ours = next((b for b in backends if b.startswith("mnv3ext")), None)
    lines = []
    if backends:
        base = backends[0]
        head = "| # | block | " + " | ".join(f"{b} ms" for b in backends)
        if len(backends) > 1:
            head += " | " + " | ".join(f"{base}/{b}" for b in backends[1:])
        for o in ort:
            head += f" | {o} µs (profiler)" + (f" | {ours}/{o}" if ours else "")
        in_model = "in_model" in per_layer
        # ORT's profiler slows its runs (its profiled node times sum to more than an unprofiled
        # whole-model call): per-node times are scaled down by that factor before the ratio.
        scale = {}
        for o in ort:
            total = per_layer["ort"][o].get("run_total_us")
            scale[o] = (whole_model_ms[o] * 1e3 / total if whole_model_ms and o in whole_model_ms and total
                        else 1.0)
        if in_model:
            head += " | mnv3ext in-model µs" + "".join(
                f" | in-model/{o}" + (" (scaled)" if scale[o] != 1.0 else "") for o in ort)
        lines += [head + " |", "|" + "---|" * head.count("|")]

        def in_model_cells(us, ort_by_backend):
            if not in_model:
                return []
            cells = ["–" if us is None else f"{us:.1f}"]
            for o in ort:
                ref = ort_by_backend.get(o)
                cells.append("–" if us is None or not ref else f"{us / (ref * scale[o]):.2f}")
            return cells

        def ort_cells(us_by_backend, ours_ms):
            cells = []
            for o in ort:
                us = us_by_backend.get(o)
                cells.append("–" if us is None else f"{us:.1f}")
                if ours:
                    cells.append("–" if not us or ours_ms is None else f"{ours_ms * 1e3 / us:.2f}")
            return cells

        for r in per_layer["rows"]:
            cells = [f"{r['median_ms'][b]:.3f}" + ("*" if b in r.get("notes", {}) else "") for b in backends]
            ratios = [f"{r['median_ms'][base] / r['median_ms'][b]:.2f}×" for b in backends[1:]]
            extra = ort_cells(r.get("ort_us", {}), r["median_ms"].get(ours) if ours else None)
            extra += in_model_cells(r.get("in_model_us"), r.get("ort_us", {}))
            lines.append(f"| {r['index']} | {r['name']} | " + " | ".join(cells + ratios + extra) + " |")
        tot = per_layer["total_ms"]
        ratios = [f"{tot[base] / tot[b]:.2f}×" for b in backends[1:]]
        ort_tot = {o: per_layer["ort"][o]["total_us"] for o in ort}
        extra = ort_cells(ort_tot, tot.get(ours) if ours else None)
        extra += in_model_cells(per_layer["in_model"]["total_us"] if in_model else None, ort_tot)
        lines.append("| | **sum of blocks** | " + " | ".join([f"{tot[b]:.3f}" for b in backends] + ratios + extra) + " |")
        if whole_model_ms:
            cells = [f"{whole_model_ms[b]:.3f}" if b in whole_model_ms else "" for b in backends]
            extra = []
            for o in ort:
                extra += [f"{whole_model_ms[o] * 1e3:.1f}" if o in whole_model_ms else ""] + ([""] if ours else [])
            extra += [""] * len(in_model_cells(None, {}))
            lines.append("| | whole model | " + " | ".join(cells + [""] * (len(backends) - 1) + extra) + " |")
        if ort:
            lines.append(f"ONNX Runtime columns: its profiler's node kernel times inside whole-model runs, charged to "
                         f"blocks by ONNX scope name (medians over {per_layer['ort'][ort[0]]['runs']} runs); "
                         f"{ours}/ORT = {ours} ms / ORT ms." if ours else
                         "ONNX Runtime columns: its profiler's node kernel times inside whole-model runs, charged to "
                         "blocks by ONNX scope name (medians).")
        if in_model:
            lines.append(f"mnv3ext in-model: the whole optimized model's steps timed inside its one sequential op "
                         f"(wall time per step, medians over {per_layer['in_model']['runs']} back-to-back runs), "
                         "where each block finds its input as the model leaves it -- the same footing as ORT's "
                         "profiler times."
                         + "".join(f" (scaled): ORT's per-block times x {scale[o]:.2f}, its unprofiled whole-model "
                                   f"time over its profiled runs' node total, since profiling slows it."
                                   for o in ort if scale[o] != 1.0))
        noted = {(b, r["name"], t) for r in per_layer["rows"] for b, t in r.get("notes", {}).items()}
        for b, name, text in sorted(noted):
            lines.append(f"\\* {b}, {name}: {text}")
    for b, reason in per_layer.get("unavailable", {}).items():
        lines.append(f"per-layer {b}: unavailable ({reason})")
    return "\n".join(lines)
