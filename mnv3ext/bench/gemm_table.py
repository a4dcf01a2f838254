"""The GEMM table (``python -m mnv3ext bench-ops --kinds pw``): every 1x1 conv of MobileNetV3-Large
and -Small, the stem and the classifier, ours vs ONNX Runtime on a one-node model of the layer
(:mod:`mnv3ext.bench.gemm_cases`), at each thread count asked for.

Per case the two candidates are timed in short alternating blocks
(:func:`mnv3ext.bench.timing.alternating_blocks`: a warm call, then several timed calls per block,
blocks rotating between ours and ORT), so ORT's spinning pool does not steal the cores from the
call timed after it; medians. Columns: µs ours, µs ORT, ours / ORT, G multiply-adds/s of each, and
each one's share of the FMA peak of the threads used (:mod:`mnv3ext.bench.fma`).

Targets (the GEMM issue): over Large's 1x1 layers, the sum of ours <= 0.8x the sum of ORT's, and
no layer slower than ORT's (ours / ORT <= 1).
"""
from __future__ import annotations

import statistics
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from .gemm_cases import gemm_cases
from .timing import alternating_blocks

__all__ = ["SUM_TARGET", "LAYER_TARGET", "measure_gemm_cases", "gemm_sums", "format_gemm_table",
           "run_gemm_table"]

SUM_TARGET = 0.8  # sum of ours / sum of ORT's over Large's 1x1 layers
LAYER_TARGET = 1.0  # ours / ORT per layer
_OP_NAME = {"conv": "stem 3x3 s2", "pointwise": "1x1", "linear": "linear"}


def _shape(layer) -> Dict[str, Any]:
    if layer.op == "linear":
        return {"in_channels": layer.in_features, "out_channels": layer.out_features, "size": None}
    return {"in_channels": layer.in_channels, "out_channels": layer.out_channels, "size": layer.size}


def measure_gemm_cases(cases, *, threads: int, peak_gmacs: Optional[float], warmup: int = 5,
                       runs: Optional[int] = None, seconds: Optional[float] = None, block_calls: int = 5,
                       profile_dir: Optional[str] = None,
                       progress: Optional[Callable[[float, str], None]] = None) -> List[Dict[str, Any]]:
    """One row per case (times in µs); ``peak_gmacs``: the FMA peak of ``threads`` threads. With
    ``profile_dir``, ORT's profiler splits its time into the layer's nodes and its reorders."""
    rows = []
    with torch.inference_mode():
        for i, case in enumerate(cases):
            if progress is not None:
                progress(i / max(len(cases), 1), case.id)
            fns = {"ours": case.ours}
            if case.ort is not None:
                fns["ort"] = case.ort
            err = case.errors()
            stats = alternating_blocks(fns, block_calls=block_calls, warmup=warmup, runs=runs, seconds=seconds,
                                       seed=i)
            layer = case.layer
            row: Dict[str, Any] = {
                "id": case.id, "kind": "pw", "op": layer.op, "model": layer.model, "layer": layer.name,
                "role": getattr(layer, "role", None) or ("stem" if layer.op == "conv" else f"fc{layer.index}"),
                **_shape(layer), "activation": layer.activation,
                "residual": bool(getattr(layer, "residual", False)),
                "input_scale": bool(getattr(layer, "input_scale", False)),
                "threads": threads, "macs": case.macs, "peak_gmacs": peak_gmacs,
                "ours_us": stats["ours"].median * 1e6, "ours_p10_us": stats["ours"].p10 * 1e6,
                "ours_p90_us": stats["ours"].p90 * 1e6, "samples": stats["ours"].n,
                "ort_us": None, "ort_p10_us": None, "ort_p90_us": None, **err,
            }
            row.update(ort_kernel_us=None, ort_reorder_us=None, ort_ops=None)
            if "ort" in stats:
                row.update(ort_us=stats["ort"].median * 1e6, ort_p10_us=stats["ort"].p10 * 1e6,
                           ort_p90_us=stats["ort"].p90 * 1e6)
                if profile_dir is not None:
                    prof = case.ort_node_times(profile_dir)
                    row.update(ort_kernel_us=prof["kernel_us"], ort_reorder_us=prof["reorder_us"],
                               ort_ops=prof["ops"])
            rows.append(_derive(row))
    if progress is not None:
        progress(1.0, "done")
    return rows


def _derive(row: Dict[str, Any]) -> Dict[str, Any]:
    ours, ort, peak = row["ours_us"], row.get("ort_us"), row.get("peak_gmacs")
    row["ours_gmacs"] = row["macs"] / ours / 1e3
    row["ort_gmacs"] = row["macs"] / ort / 1e3 if ort else None
    row["ratio"] = ours / ort if ort else None
    row["ours_peak_share"] = row["ours_gmacs"] / peak if peak else None
    row["ort_peak_share"] = row["ort_gmacs"] / peak if peak and row["ort_gmacs"] else None
    row["target_met"] = None if row["ratio"] is None else bool(row["ratio"] <= LAYER_TARGET)
    kernel = row.get("ort_kernel_us")
    row["ratio_vs_ort_kernel"] = ours / kernel if kernel else None
    return row


def _merge_passes(passes: Sequence[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    if len(passes) == 1:
        return passes[0]
    merged = []
    for same in zip(*passes):
        row = dict(same[0])
        for key in ("ours_us", "ort_us", "ort_kernel_us", "ort_reorder_us"):
            vals = [r.get(key) for r in same if r.get(key) is not None]
            row[key] = statistics.median(vals) if vals else None
        row["passes"] = [{"ours_us": r["ours_us"], "ort_us": r["ort_us"]} for r in same]
        merged.append(_derive(row))
    return merged


def gemm_sums(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per thread count and model: the sum over the 1x1 layers (the target's, for Large) and over
    all GEMM-family layers (stem + 1x1 + classifier), when all of them were run."""
    from .. import shapes

    want = {("large", "pointwise"): len(shapes.LARGE_PW), ("large", "all"): len(shapes.LARGE_GEMM),
            ("small", "pointwise"): len(shapes.SMALL_PW), ("small", "all"): len(shapes.SMALL_GEMM)}
    out = []
    for threads in sorted({r["threads"] for r in rows}):
        for (model, which), count in want.items():
            sel = [r for r in rows if r["threads"] == threads and r["model"] == model
                   and (which == "all" or r["op"] == which)]
            if len(sel) != count or any(r["ort_us"] is None for r in sel):
                continue
            ours, ort = sum(r["ours_us"] for r in sel), sum(r["ort_us"] for r in sel)
            macs, peak = sum(r["macs"] for r in sel), sel[0]["peak_gmacs"]
            s = {"id": f"{model}.sum_{'pw' if which == 'pointwise' else 'gemm'}-t{threads}", "model": model,
                 "layers": which, "count": count, "threads": threads, "macs": macs, "ours_us": ours,
                 "ort_us": ort, "ratio": ours / ort, "ours_gmacs": macs / ours / 1e3, "ort_gmacs": macs / ort / 1e3,
                 "peak_gmacs": peak,
                 "worst_ratio": max(r["ratio"] for r in sel),
                 "layers_slower_than_ort": sum(1 for r in sel if r["ratio"] > LAYER_TARGET)}
            kernels = [r.get("ort_kernel_us") for r in sel]
            s["ort_kernel_us"] = sum(kernels) if all(k is not None for k in kernels) else None
            s["ratio_vs_ort_kernel"] = ours / s["ort_kernel_us"] if s["ort_kernel_us"] else None
            s["ours_peak_share"] = s["ours_gmacs"] / peak if peak else None
            s["ort_peak_share"] = s["ort_gmacs"] / peak if peak else None
            s["target_met"] = (bool(s["ratio"] <= SUM_TARGET and s["layers_slower_than_ort"] == 0)
                               if (model, which) == ("large", "pointwise") else None)
            out.append(s)
    return out


def _f(v, fmt, empty="–"):
    return empty if v is None else format(v, fmt)


def _pct(v):
    return "–" if v is None else f"{v * 100:.0f}%"


def _label(r: Dict[str, Any]) -> str:
    name = r["layer"].split("_")[0]
    extras = (" +se" if r.get("input_scale") else "") + (" +res" if r.get("residual") else "")
    return name + extras


def format_gemm_table(rows: List[Dict[str, Any]], sums: List[Dict[str, Any]], peak_source: Optional[str] = None,
                      header: Optional[str] = None) -> str:
    """Markdown: one table per thread count, then the sums."""
    lines: List[str] = []
    if header:
        lines += ["```", header, "```", ""]
    for threads in sorted({r["threads"] for r in rows}):
        sel = [r for r in rows if r["threads"] == threads]
        peak = sel[0]["peak_gmacs"]
        lines += [f"**GEMM family, ours vs ONNX Runtime (one-node model), {threads} thread"
                  f"{'s' if threads != 1 else ''}** (target: each layer ours/ORT ≤ {LAYER_TARGET:g}; "
                  f"FMA peak {_f(peak, '.1f')} G MAC/s)", ""]
        cols = ("| layer | op | C in→out | H=W | act | MMAC | ours µs | ORT µs | ours/ORT | ours GMAC/s | "
                "ORT GMAC/s | ours % peak | ORT % peak | ≤ ORT | ORT nodes µs | ours/ORT nodes |")
        lines += [cols, "|" + "---|" * (cols.count("|") - 1)]
        for r in sel:
            ok = "–" if r["target_met"] is None else ("✓" if r["target_met"] else "✗")
            lines.append(
                f"| {_label(r)} | {_OP_NAME[r['op']]} | {r['in_channels']}→{r['out_channels']} | "
                f"{_f(r['size'], 'd')} | {r['activation']} | {r['macs'] / 1e6:.2f} | {r['ours_us']:.1f} | "
                f"{_f(r['ort_us'], '.1f')} | {_f(r['ratio'], '.2f')} | {r['ours_gmacs']:.1f} | "
                f"{_f(r['ort_gmacs'], '.1f')} | {_pct(r['ours_peak_share'])} | {_pct(r['ort_peak_share'])} | {ok} | "
                f"{_f(r.get('ort_kernel_us'), '.1f')} | {_f(r.get('ratio_vs_ort_kernel'), '.2f')} |")
        lines.append("")
        tsums = [s for s in sums if s["threads"] == threads]
        if tsums:
            cols = ("| sum | layers | MMAC | ours µs | ORT µs | ours/ORT | ours GMAC/s | ORT GMAC/s | ours % peak | "
                    "ORT % peak | worst layer | layers > ORT | target | ORT nodes µs | ours/ORT nodes |")
            lines += [cols, "|" + "---|" * (cols.count("|") - 1)]
            for s in tsums:
                what = f"{s['model']}: {'the 1x1 convs' if s['layers'] == 'pointwise' else 'stem + 1x1 + classifier'}"
                ok = "–" if s["target_met"] is None else ("✓" if s["target_met"] else "✗")
                lines.append(
                    f"| **{what}** | {s['count']} | {s['macs'] / 1e6:.1f} | {s['ours_us']:.1f} | {s['ort_us']:.1f} | "
                    f"{s['ratio']:.2f} | {s['ours_gmacs']:.1f} | {s['ort_gmacs']:.1f} | {_pct(s['ours_peak_share'])} | "
                    f"{_pct(s['ort_peak_share'])} | {s['worst_ratio']:.2f} | {s['layers_slower_than_ort']} | {ok} | "
                    f"{_f(s.get('ort_kernel_us'), '.1f')} | {_f(s.get('ratio_vs_ort_kernel'), '.2f')} |")
            lines.append("")
    passes = len(rows[0].get("passes", ())) if rows else 0
    if passes > 1:
        lines.append(f"Each time is the median over {passes} passes of the whole table.")
    lines.append(
        "Medians, 1 image, ours and ORT timed in alternating blocks (a warm call, then several timed calls each). "
        "ours = mnv3ext.ops.pointwise_conv2d_packed / conv2d_packed / linear_packed (weights packed once, "
        "channels_last activations); ORT = default session options, intra_op_num_threads = threads (its pool spins), "
        "a one-node model of the layer exported with torch.onnx.export(dynamo=False), NCHW, incl. the NCHWc reorders "
        "ORT inserts around a lone conv. +se: the SE gate applied to the input (input_scale; ORT: Mul before the Conv); "
        "+res: the block's residual added. ORT nodes = ORT's profiler: the kernel time of the layer's own nodes "
        "(Conv/Gemm with the fused activation, Mul, Add) without its NCHWc reorders and without session.run's "
        "overhead (median of 20 runs, not interleaved; ours/ORT nodes is pessimistic for ours, which includes its "
        "Python entry). target (on ours/ORT, the time ORT's users get): Large's 1x1 sum ≤ "
        f"{SUM_TARGET:g}× ORT and no layer above {LAYER_TARGET:g}×."
        + (f" FMA peak: {peak_source}, times min(threads, physical cores)." if peak_source else ""))
    return "\n".join(lines)


def run_gemm_table(models=("large", "small"), match: Optional[str] = None, threads: Sequence[int] = (1,),
                   warmup: int = 5, runs: Optional[int] = None, seconds: Optional[float] = None, passes: int = 1,
                   block_calls: int = 5, fma_override: Optional[float] = None, progress=None, log=lambda m: None):
    """(rows, sums, peak_source) for every thread count in ``threads``."""
    import mnv3ext

    from .fma import fma_peak, peak_for_threads
    from .op_table import num_threads

    if not gemm_cases(models=models, match=match, threads=1):
        return [], [], None
    per_core, source = fma_peak(mnv3ext.current_isa(), fma_override)
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mnv3ext-gemm-") as workdir:
        for t in threads:
            with num_threads(t):
                cases = gemm_cases(models=models, match=match, threads=t)
                try:
                    for c in cases:
                        c.make_ort(workdir)
                except ImportError as e:
                    log(f"ONNX Runtime unavailable ({e}): ours only")
                results = []
                for p in range(passes):
                    step = None if progress is None else (
                        lambda f, msg, p=p, t=t: progress((p + f) / passes, f"{t} thr, pass {p + 1}/{passes}: {msg}"))
                    results.append(measure_gemm_cases(cases, threads=t, peak_gmacs=peak_for_threads(per_core, t),
                                                      warmup=warmup, runs=runs, seconds=seconds,
                                                      block_calls=block_calls, profile_dir=workdir, progress=step))
                rows += _merge_passes(results)
    return rows, gemm_sums(rows), source
