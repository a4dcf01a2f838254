"""Text output of bench results: the single-run table, ``report`` (merge several JSON files into one
markdown table) and bar charts (matplotlib, optional)."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

from .schema import validate

__all__ = ["MODEL_NAMES", "describe_settings", "format_results", "load_runs", "merge_table", "plot_runs",
           "matplotlib_available", "run_label"]

MODEL_NAMES = {"large": "MobileNetV3-Large", "small": "MobileNetV3-Small", "lraspp": "LR-ASPP MobileNetV3-Large"}


def _f(v: Optional[float], fmt: str, empty: str = "–") -> str:
    return empty if v is None else format(v, fmt)


def describe_settings(doc: Dict[str, Any]) -> str:
    s = doc["settings"]
    width = f" ×{s['width']:g}" if s["width"] != 1.0 else ""
    rounds = f" ({s['rounds']} rounds)" if s.get("rounds") is not None else ""
    if s.get("timing") == "alternating-blocks":
        timing = f"{s['runs']} timed calls each" if s.get("runs") else f"{s['seconds']:g} s"
        how = (f"backends in alternating blocks (a warm call + {s.get('block_calls')} timed calls per block), "
               f"{timing}" + (f" ({s['rounds']} blocks)" if s.get("rounds") is not None else "")
               + f" after {s['warmup']} warm-up calls")
    else:  # schema version 1: call-by-call round-robin
        timing = f"{s['runs']} runs" if s.get("runs") else f"{s['seconds']:g} s"
        how = f"backends interleaved round-robin, {timing}{rounds} after {s['warmup']} warm-up rounds"
    return (f"{MODEL_NAMES.get(s['model'], s['model'])}{width}, batch {s['batch']}, {s['size']}×{s['size']}, "
            f"{s['threads']} thread{'s' if s['threads'] != 1 else ''}, {how}")


def format_results(doc: Dict[str, Any]) -> str:
    """Markdown table of one run (ok backends), then skipped / failed backends with the reason."""
    lines = [
        "| backend | median ms | p10 ms | p90 ms | images/s | vs eager | max abs err | top-1 agree | setup s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    others = []
    for r in doc["results"]:
        if r["status"] != "ok":
            others.append(f"{r['status']}: {r['backend']} — {r['reason']}")
            continue
        lat = r["latency_ms"]
        agree = r.get("top1_agreement")
        lines.append(
            f"| {r['backend']} | {lat['median']:.3f} | {lat['p10']:.3f} | {lat['p90']:.3f} | "
            f"{_f(r.get('images_per_second'), '.1f')} | {_f(r.get('speedup_vs_eager'), '.2f')}× | "
            f"{_f(r.get('max_abs_err'), '.1e')} | {_f(None if agree is None else agree * 100, '.1f')}% | "
            f"{_f(r.get('setup_seconds'), '.1f')} |"
        )
    if len(lines) == 2:
        lines = ["(no backend ran)"]
    else:
        lines += ["", "vs eager = eager median / this median; errors against the eager output on the same input; "
                      "setup s = optimize / ONNX export + session / torch.compile incl. its first call "
                      "(not in the latencies)."]
    return "\n".join(lines + ([""] + others if others else []))


def load_runs(paths: Sequence[str]) -> List[Dict[str, Any]]:
    """Read and validate bench JSON files; ValueError naming the file on any problem."""
    docs = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except OSError as e:
            raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
        try:
            validate(doc)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        doc["_path"] = path
        docs.append(doc)
    return docs


def run_label(doc: Dict[str, Any]) -> str:
    if doc.get("label"):
        return str(doc["label"])
    m = doc["machine"]
    return f"{m['cpu_model']} ({m['arch']})"


def _backend_order(docs: Sequence[Dict[str, Any]]) -> List[str]:
    """Backends present in any run: the CLI's canonical order first, then unknown ones."""
    from .backends import BACKENDS

    present = {r["backend"] for doc in docs for r in doc["results"]}
    order: List[str] = [b for b in BACKENDS if b in present]
    for doc in docs:
        for r in doc["results"]:
            if r["backend"] not in order:
                order.append(r["backend"])
    return order


def merge_table(docs: Sequence[Dict[str, Any]], metric: str = "median") -> str:
    """One markdown table: a row per run, a column per backend: ``ms (×speedup vs eager)``."""
    backends = _backend_order(docs)
    head = "| machine | model | ISA | threads | " + " | ".join(backends) + " |"
    lines = [f"Latency {metric} in ms (speedup vs eager), batch/size per run as listed.", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    notes = []
    for i, doc in enumerate(docs, start=1):
        s, m = doc["settings"], doc["machine"]
        cells = []
        by = {r["backend"]: r for r in doc["results"]}
        for b in backends:
            r = by.get(b)
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append(r["status"])
                notes.append(f"[{i}] {b} {r['status']}: {r['reason']}")
            else:
                v = r["latency_ms"][metric]
                sp = r.get("speedup_vs_eager")
                cells.append(f"{v:.2f}" + (f" ({sp:.2f}×)" if sp is not None and b != "eager" else ""))
        model = f"{s['model']}{'' if s['width'] == 1.0 else ' ×%g' % s['width']} b{s['batch']} {s['size']}px"
        lines.append(f"| [{i}] {run_label(doc)} | {model} | {m['isa_in_use']} | {s['threads']} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    for i, doc in enumerate(docs, start=1):
        m = doc["machine"]
        lines.append(f"[{i}] {os.path.basename(doc.get('_path', ''))}: {m['cpu_model']}, {m['logical_cores']} cores, "
                     f"{m['arch']}, mnv3ext {m['mnv3ext_version']}, torch {m['torch_version']}, "
                     f"{doc['created']}")
    if notes:
        lines += [""] + notes
    return "\n".join(lines)


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_runs(docs: Sequence[Dict[str, Any]], path: str, metric: str = "median") -> str:
    """Grouped bar chart (one group per run, one bar per backend, p10-p90 whiskers) -> ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = _backend_order(docs)
    n_runs = len(docs)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 0.45 * len(backends) * n_runs), 4.0), dpi=100)
    width = 0.8 / max(len(backends), 1)
    colors = plt.get_cmap("tab10")
    for j, b in enumerate(backends):
        xs, ys, lo, hi = [], [], [], []
        for i, doc in enumerate(docs):
            r = next((r for r in doc["results"] if r["backend"] == b and r["status"] == "ok"), None)
            if r is None:
                continue
            lat = r["latency_ms"]
            xs.append(i + (j - (len(backends) - 1) / 2) * width)
            ys.append(lat[metric])
            lo.append(max(lat[metric] - lat["p10"], 0.0))
            hi.append(max(lat["p90"] - lat[metric], 0.0))
        if xs:
            ax.bar(xs, ys, width * 0.95, yerr=[lo, hi], capsize=2, label=b, color=colors(j % 10))
    ax.set_xticks(range(n_runs))
    labels = []
    for doc in docs:
        s = doc["settings"]
        labels.append(f"{run_label(doc)[:40]}\n{s['model']} {s['size']}px, {s['threads']} thr, {doc['machine']['isa_in_use']}")
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel(f"latency, {metric} ms (whiskers p10–p90)")
    ax.set_title("mnv3ext bench")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
