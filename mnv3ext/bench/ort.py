"""ONNX Runtime as its users get it, and its profiler's per-node times mapped onto model blocks.

* :func:`session`: an ``InferenceSession`` on the CPU provider with ORT's default session options
  (graph optimizations ALL, sequential executor, intra-op thread pool *spinning*), only
  ``intra_op_num_threads`` set to the thread count measured; ``spinning=False`` gives the
  ``onnxruntime-nospin`` variant (``session.intra_op.allow_spinning = 0``).
* :func:`profile_runs`: runs a session with ``enable_profiling`` and returns, per timed run, the
  ``(node name, op type, microseconds)`` of every node in execution order, read from the JSON
  trace (``cat == "Node"`` events, grouped into runs by the ``model_run`` events' windows).
* :func:`block_of_node` / :func:`per_block_us`: which row of the per-layer table a node belongs to,
  from the scope names of the TorchScript ONNX export (``/features/features.3/block/...`` ->
  block 3, ``/avgpool``, ``/Flatten``, ``/classifier/...`` -> the head). Nodes ORT's optimizer
  adds without a scope (``ReorderInput`` / ``ReorderOutput`` of its NCHWc layout, the pieces of a
  decomposed activation) go to the block of the scoped node before them in execution order (the
  first ones, with none before, to the block of the next scoped node).
"""
from __future__ import annotations

import json
import os
import re
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["session", "profile_runs", "block_of_node", "assign_blocks", "per_block_us"]


def session(path: str, threads: int, *, spinning: bool = True, profile_prefix: Optional[str] = None):
    """ORT CPU session with default options but ``intra_op_num_threads = threads``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    so.log_severity_level = 3  # no warnings on stderr; does not change execution
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def _node_events(trace: Sequence[Dict[str, Any]]) -> List[List[Tuple[str, str, float]]]:
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    nodes = sorted((e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    out: List[List[Tuple[str, str, float]]] = [[] for _ in runs]
    k = 0
    for e in nodes:
        while k < len(runs) and e["ts"] > runs[k][1]:
            k += 1
        if k == len(runs):
            break
        if e["ts"] >= runs[k][0]:
            name = e["name"][: -len("_kernel_time")]
            out[k].append((name, e.get("args", {}).get("op_name", ""), float(e["dur"])))
    return out


def profile_runs(path: str, feed: Dict[str, Any], threads: int, runs: int, workdir: str, *,
                 warmup: int = 3, spinning: bool = True) -> List[List[Tuple[str, str, float]]]:
    """Per timed run: [(node name, op type, µs)] in execution order (warm-up runs dropped)."""
    sess = session(path, threads, spinning=spinning, profile_prefix=os.path.join(workdir, "ort-profile"))
    try:
        for _ in range(warmup + runs):
            sess.run(None, feed)
    finally:
        trace_path = sess.end_profiling()
    try:
        with open(trace_path, encoding="utf-8") as f:
            trace = json.load(f)
    finally:
        try:
            os.remove(trace_path)
        except OSError:
            pass
    per_run = _node_events(trace)
    return per_run[warmup:] if len(per_run) > warmup else per_run


_FEATURE = re.compile(r"^/(?:features|backbone)/(?:features\.|backbone\.)?(\d+)(?:/|$)")
_HEAD = re.compile(r"^/(?:avgpool|classifier|Flatten|flatten)(?:/|_|$)")


def block_of_node(name: str, blocks: int) -> Optional[int]:
    """Row index (0 = stem .. blocks - 2 = last conv, blocks - 1 = head) of a node from its ONNX
    scope name, or None for a node without a scope (ORT's own reorders / decompositions)."""
    m = _FEATURE.match(name)
    if m:
        i = int(m.group(1))
        return i if i < blocks - 1 else None
    if _HEAD.match(name) or name.startswith("/Resize") or name.startswith("/Add"):
        return blocks - 1
    return None


def assign_blocks(names: Sequence[str], blocks: int) -> List[int]:
    """Row index of every node (execution order): its scope's, else its scoped predecessor's,
    else (at the start) its scoped successor's; with no scoped node at all, the last row."""
    scoped = [block_of_node(n, blocks) for n in names]
    out: List[Optional[int]] = []
    last = None
    for b in scoped:
        if b is not None:
            last = b
        out.append(last)
    nxt = next((b for b in scoped if b is not None), blocks - 1)
    return [nxt if b is None else b for b in out]


def per_block_us(per_run: Sequence[Sequence[Tuple[str, str, float]]], blocks: int) -> Dict[str, Any]:
    """{"median_us": [per row: median over runs of the row's summed node times], "p10_us",
    "p90_us", "total_us" (sum of the medians), "run_total_us" (median over runs of all node times),
    "nodes": [per row: node names], "runs": n}."""
    from .timing import summarize

    sums = [[0.0] * blocks for _ in per_run]
    nodes: List[List[str]] = [[] for _ in range(blocks)]
    for r, run in enumerate(per_run):
        rows = assign_blocks([n for n, _, _ in run], blocks)
        for (name, _, dur), row in zip(run, rows):
            sums[r][row] += dur
            if r == 0:
                nodes[row].append(name)
    stats = [summarize([s[i] for s in sums]) if sums else None for i in range(blocks)]
    return {
        "median_us": [s.median if s else None for s in stats],
        "p10_us": [s.p10 if s else None for s in stats],
        "p90_us": [s.p90 if s else None for s in stats],
        # as the torch backends' per-layer totals: the sum of the per-block medians
        "total_us": sum(s.median for s in stats if s) if sums else None,
        "run_total_us": statistics.median(sum(s) for s in sums) if sums else None,
        "nodes": nodes,
        "runs": len(per_run),
    }
