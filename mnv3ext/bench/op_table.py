"""The per-op table of issue 2: every depthwise / SE layer, eager vs ours, against a copy roofline.

Run it with ``python -m mnv3ext bench-ops`` (see ``--help``). Per shape and layout it reports the
eager time, ours (the entry point the fused modules call), the same through torch.ops (with the
dispatcher round trip), the speedup, our effective bandwidth (bytes moved / our time), the
roofline, our ratio to it, and whether the issue's target is met; then the sums over
MobileNetV3-Large's 15 depthwise and 8 SE layers. All candidates are timed interleaved
(round-robin, shuffled each round) in one process, warm-up excluded; all times are medians.

The roofline is the time of a copy moving the same bytes (working set = bytes moved, numpy
``copyto``, its 64-byte call time subtracted), timed as a fourth candidate in the same rounds: so
it finds the caches in the state the ops find them (each round's other candidates evict what they
can), as the ops' own times do. ``hot_copy_us`` is the same copy in a hot loop of its own
(:mod:`mnv3ext.bench.bandwidth`), which for working sets beyond L2 is faster than any candidate
of an interleaved round can be; it is reported, not used for the target.

Targets (issue 2): a depthwise layer passes at >= 5x eager, an SE layer at >= 3x, or either when
within 1.25x of its roofline; the Large sums pass within 1.5x of their roofline.
"""
from __future__ import annotations

import contextlib
import statistics
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

from .bandwidth import copier, copy_bandwidth, copy_call_overhead, without_call_time
from .opcases import LAYOUTS, OpCase, all_cases
from .timing import interleaved

__all__ = ["TARGET_SPEEDUP", "ROOFLINE_SLACK", "SUM_SLACK", "measure_cases", "merge_passes", "sum_rows",
           "format_op_table", "run_op_table"]

TARGET_SPEEDUP = {"dw": 5.0, "se": 3.0}
ROOFLINE_SLACK = 1.25
SUM_SLACK = 1.5
LARGE_COUNTS = {"dw": 15, "se": 8}


@contextlib.contextmanager
def num_threads(n: Optional[int]):
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def measure_cases(cases: Sequence[OpCase], *, warmup: int = 5, runs: Optional[int] = None,
                  seconds: Optional[float] = None, min_sample_seconds: float = 2e-4,
                  progress: Optional[Callable[[float, str], None]] = None) -> List[Dict[str, object]]:
    """One row dict per case (times in microseconds). ``seconds`` is the budget per case."""
    rows = []
    with torch.inference_mode():
        for i, case in enumerate(cases):
            if progress is not None:
                progress(i / max(len(cases), 1), case.id)
            err = case.max_abs_error()
            stats = interleaved({"eager": case.eager, "ours": case.ours, "via_ops": case.via_ops,
                                 "copy": copier(case.bytes_moved)}, warmup=warmup, runs=runs,
                                seconds=seconds, min_sample_seconds=min_sample_seconds, seed=i)
            eager, ours, copy = stats["eager"].median, stats["ours"].median, stats["copy"].median
            roof = without_call_time(copy)
            hot_copy = case.bytes_moved / copy_bandwidth(case.bytes_moved)
            row = {
                "id": case.id, "kind": case.kind, "model": case.layer.model, "layer": case.name,
                "layout": case.layout, "channels": case.layer.channels, "size": case.layer.size,
                "kernel": getattr(case.layer, "kernel", None), "stride": getattr(case.layer, "stride", None),
                "squeeze": getattr(case.layer, "squeeze", None),
                "bytes": case.bytes_moved, "eager_us": eager * 1e6, "ours_us": ours * 1e6,
                "eager_p10_us": stats["eager"].p10 * 1e6, "eager_p90_us": stats["eager"].p90 * 1e6,
                "ours_p10_us": stats["ours"].p10 * 1e6, "ours_p90_us": stats["ours"].p90 * 1e6,
                "via_ops_us": stats["via_ops"].median * 1e6, "samples": stats["ours"].n,
                "roofline_us": roof * 1e6, "hot_copy_us": hot_copy * 1e6, "max_abs_err": err,
            }
            rows.append(_derive(row))
    if progress is not None:
        progress(1.0, "done")
    return rows


def _derive(row: Dict[str, object]) -> Dict[str, object]:
    """Fills the fields computed from the times: speedup, GB/s, ratio to the roofline, target."""
    row["speedup"] = row["eager_us"] / row["ours_us"]
    row["gbps"] = row["bytes"] / row["ours_us"] / 1e3
    row["copy_gbps"] = row["bytes"] / row["roofline_us"] / 1e3
    row["x_roofline"] = row["ours_us"] / row["roofline_us"]
    row["target_met"] = bool(row["speedup"] >= TARGET_SPEEDUP[row["kind"]]
                             or row["x_roofline"] <= ROOFLINE_SLACK)
    return row


_PASS_TIMES = ("eager_us", "ours_us", "via_ops_us", "roofline_us", "hot_copy_us")


def merge_passes(passes: Sequence[List[Dict[str, object]]]) -> List[Dict[str, object]]:
    """Per case, the median over whole passes of the table of each time (a shared machine drifts
    over minutes, which interleaving within one case cannot cancel); each pass's times and
    whether it met the target are kept under ``passes``."""
    if len(passes) == 1:
        return passes[0]
    merged = []
    for same in zip(*passes):
        row = dict(same[0])
        for key in _PASS_TIMES:
            row[key] = statistics.median(r[key] for r in same)
        row["max_abs_err"] = max(r["max_abs_err"] for r in same)
        row["passes"] = [{**{k: r[k] for k in _PASS_TIMES}, "target_met": r["target_met"]} for r in same]
        merged.append(_derive(row))
    return merged


def sum_rows(rows: Iterable[Dict[str, object]]) -> List[Dict[str, object]]:
    """Sums over Large's depthwise and SE layers, per layout (only when all of them were run)."""
    rows = list(rows)
    out = []
    for kind in ("dw", "se"):
        for layout in LAYOUTS:
            sel = [r for r in rows if r["model"] == "large" and r["kind"] == kind and r["layout"] == layout]
            if len(sel) != LARGE_COUNTS[kind]:
                continue
            eager = sum(r["eager_us"] for r in sel)
            ours = sum(r["ours_us"] for r in sel)
            via_ops = sum(r["via_ops_us"] for r in sel)
            roof = sum(r["roofline_us"] for r in sel)
            hot_copy = sum(r["hot_copy_us"] for r in sel)
            moved = sum(r["bytes"] for r in sel)
            out.append({
                "id": f"large.sum_{kind}-{'cl' if layout == 'channels_last' else 'nchw'}",
                "kind": kind, "layout": layout, "layers": len(sel), "bytes": moved,
                "eager_us": eager, "ours_us": ours, "via_ops_us": via_ops, "speedup": eager / ours,
                "gbps": moved / (ours * 1e-6) / 1e9, "roofline_us": roof, "x_roofline": ours / roof,
                "hot_copy_us": hot_copy, "target_met": bool(ours / roof <= SUM_SLACK),
            })
    return out


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.2f}" if n >= 2 ** 20 else f"{n / 2 ** 10:.0f} KiB"


def format_op_table(rows: List[Dict[str, object]], sums: List[Dict[str, object]],
                    header: Optional[str] = None) -> str:
    """Markdown: one table per kind, then the Large sums; ready to paste into docs/performance.md."""
    lines: List[str] = []
    if header:
        lines += ["```", header, "```", ""]
    layout_name = {"nchw": "NCHW", "channels_last": "NHWC"}
    for kind, title in (("dw", "Depthwise conv + BN + activation"), ("se", "Squeeze-excite")):
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        if kind == "dw":
            cols = "| layer | C | H=W | k | s | layout | MiB | eager µs | ours µs | torch.ops µs | speedup | GB/s | roofline µs | ×roofline | hot copy µs | target |"
        else:
            cols = "| layer | C | H=W | S | layout | MiB | eager µs | ours µs | torch.ops µs | speedup | GB/s | roofline µs | ×roofline | hot copy µs | target |"
        lines += [f"**{title}** (target ≥ {TARGET_SPEEDUP[kind]:g}× eager or ≤ {ROOFLINE_SLACK:g}× roofline)", "",
                  cols, "|" + "---|" * (cols.count("|") - 1)]
        for r in sel:
            shape = (f"{r['channels']} | {r['size']} | {r['kernel']} | {r['stride']}" if kind == "dw"
                     else f"{r['channels']} | {r['size']} | {r['squeeze']}")
            name = f"{r['model']}.{kind}{r['layer'].split('.')[1].split('_')[0][len(kind):]}"
            lines.append(
                f"| {name} | {shape} | {layout_name[r['layout']]} | {r['bytes'] / 2 ** 20:.3f} | "
                f"{r['eager_us']:.1f} | {r['ours_us']:.1f} | {r['via_ops_us']:.1f} | {r['speedup']:.2f}× | {r['gbps']:.1f} | "
                f"{r['roofline_us']:.1f} | {r['x_roofline']:.2f} | {r['hot_copy_us']:.1f} | "
                f"{'✓' if r['target_met'] else '✗'} |"
            )
        lines.append("")
    if sums:
        cols = "| MobileNetV3-Large sum | layout | MiB | eager µs | ours µs | torch.ops µs | speedup | GB/s | roofline µs | ×roofline | hot copy µs | target |"
        lines += [f"**Sums over Large's 15 depthwise and 8 SE layers** (target ≤ {SUM_SLACK:g}× roofline)", "",
                  cols, "|" + "---|" * (cols.count("|") - 1)]
        for s in sums:
            what = f"{s['layers']} {'depthwise' if s['kind'] == 'dw' else 'SE'}"
            lines.append(
                f"| {what} | {layout_name[s['layout']]} | {s['bytes'] / 2 ** 20:.2f} | {s['eager_us']:.1f} | "
                f"{s['ours_us']:.1f} | {s['via_ops_us']:.1f} | {s['speedup']:.2f}× | {s['gbps']:.1f} | {s['roofline_us']:.1f} | "
                f"{s['x_roofline']:.2f} | {s['hot_copy_us']:.1f} | {'✓' if s['target_met'] else '✗'} |"
            )
        lines.append("")
    passes = len(rows[0].get("passes", ())) if rows else 0
    if passes > 1:
        lines.append(f"Each time is the median over {passes} passes of the whole table; "
                     "each pass is itself medians of interleaved samples.")
    lines.append(
        "Medians of interleaved samples, 1 image. ours = the eager entry point the fused modules call "
        "(mnv3ext.ops.*); torch.ops = the same op through the dispatcher. MiB = bytes read + written incl. weights; GB/s = that / ours; "
        "roofline = a copy of the same bytes (numpy, working set = MiB, its "
        f"{copy_call_overhead() * 1e6:.2f} µs call time subtracted) timed in the same interleaved rounds, so it "
        "finds the caches as the ops do; hot copy = that copy in a hot loop of its own (not used for the target)."
    )
    return "\n".join(lines)


def run_op_table(models=("large", "small"), kinds=("dw", "se"), layouts=LAYOUTS, match=None,
                 threads: int = 1, warmup: int = 5, runs: Optional[int] = None,
                 seconds: Optional[float] = None, passes: int = 1, progress=None):
    """Build the cases, measure them ``passes`` times over at ``threads`` threads, return
    (rows, sums) with each time the median over the passes."""
    if passes < 1:
        raise ValueError(f"passes: must be >= 1, got {passes}")
    with num_threads(threads):
        cases = all_cases(models=models, kinds=kinds, layouts=layouts, match=match)
        results = []
        for p in range(passes):
            step = None if progress is None else (
                lambda f, msg, p=p: progress((p + f) / passes, f"pass {p + 1}/{passes}: {msg}"))
            results.append(measure_cases(cases, warmup=warmup, runs=runs, seconds=seconds, progress=step))
    rows = merge_passes(results)
    return rows, sum_rows(rows)
