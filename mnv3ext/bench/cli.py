"""``python -m mnv3ext {bench,info,report,bench-ops}`` (also the ``mnv3ext`` console script).

bench      side-by-side whole-model benchmark (the project's main job); see ``bench --help``
info       the machine / ISA / version header alone
report     merge several ``bench --json`` files into one markdown table (and a bar chart)
bench-ops  the per-op table of issue 2: every depthwise / SE layer, eager vs ours, vs a roofline;
           --kinds pw: every 1x1 conv, the stem and the classifier, ours vs ONNX Runtime one-node models
bench-neighbours  our op's time right after ours / eager / a cache sweep
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["build_parser", "main", "run_bench"]

DEFAULT_SECONDS = 10.0
DEFAULT_OPS_SECONDS = 0.3


# ---------------------------------------------------------------------------------------------
# argument types (a bad value is an argparse usage error: exit code 2, no traceback)

def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _csv(allowed: Sequence[str], aliases: Optional[Dict[str, str]] = None):
    aliases = aliases or {}

    def parse(text: str) -> List[str]:
        items = [aliases.get(t.strip(), t.strip()) for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
        if items == ["all"]:
            return list(allowed)
        bad = [t for t in items if t not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(map(repr, bad))}; choose from {', '.join(allowed)}")
        return list(dict.fromkeys(items))
    return parse


def _add_timing(p: argparse.ArgumentParser, default_seconds: float, per: str = "") -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--runs", type=_int_at_least(1), help=f"timed rounds (bench: timed calls per backend){per}")
    g.add_argument("--seconds", type=_positive_float,
                   help=f"time budget of the timed rounds{per} (default {default_seconds:g}; at least 3 rounds)")
    p.add_argument("--warmup", type=_int_at_least(0), default=5, help="warm-up rounds, not timed (default 5)")


def _int_list(text: str) -> List[int]:
    parse = _int_at_least(1)
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of thread counts, got nothing")
    return list(dict.fromkeys(parse(t) for t in items))


def _add_case_selection(p: argparse.ArgumentParser, kinds=("dw", "se"), thread_list: bool = False) -> None:
    """The per-op cases to run (mnv3ext.bench.opcases.all_cases, gemm_cases) and the thread count(s)."""
    p.add_argument("--models", type=_csv(("large", "small")), default=["large", "small"])
    p.add_argument("--kinds", type=_csv(kinds), default=["dw", "se"],
                   help=f"comma-separated subset of {', '.join(kinds)} or all (default dw,se)")
    p.add_argument("--layouts", type=_csv(("nchw", "channels_last"), {"cl": "channels_last", "nhwc": "channels_last"}),
                   default=["nchw", "channels_last"], help="nchw, cl (default both; dw/se only)")
    p.add_argument("--match", help="only cases whose id contains this text, e.g. large.dw13")
    if thread_list:
        p.add_argument("--threads", type=_int_list, default=[1],
                       help="thread count, or a comma-separated list measured one after another (e.g. 1,2; default 1)")
    else:
        p.add_argument("--threads", type=_int_at_least(1), default=1, help="default 1")


def build_parser() -> argparse.ArgumentParser:
    from .backends import BACKENDS, DEFAULT_BACKENDS
    from .models import MODELS

    parser = argparse.ArgumentParser(
        prog="python -m mnv3ext",
        description="mnv3ext: fast MobileNetV3 CPU inference in PyTorch -- benchmarks and machine info.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{bench,info,report,bench-ops}")

    b = sub.add_parser(
        "bench", help="whole-model benchmark: eager vs mnv3ext vs torch.compile vs ONNX Runtime / OpenVINO",
        description="Times every backend in alternating blocks in one process (per block and backend a warm "
                    "call, then --block-calls timed calls; warm-up excluded, medians) "
                    "on MobileNetV3 with fixed random weights, and checks each backend's output against eager.",
    )
    b.add_argument("--model", choices=MODELS, default="large", help="default: large")
    b.add_argument("--width", type=_positive_float, default=1.0, help="width multiplier (large/small; default 1.0)")
    b.add_argument("--batch", type=_int_at_least(1), default=1, help="default 1")
    b.add_argument("--size", type=_int_at_least(32), default=224, help="input height = width (default 224)")
    b.add_argument("--threads", type=_int_at_least(1), default=None,
                   help="threads for torch and the other runtimes (default: torch.get_num_threads())")
    _add_timing(b, DEFAULT_SECONDS)
    b.add_argument("--backends", type=_csv(tuple(BACKENDS)), default=list(DEFAULT_BACKENDS),
                   help=f"comma-separated subset of: {', '.join(BACKENDS)} (default: all)")
    b.add_argument("--block-calls", type=_int_at_least(1), default=5,
                   help="timed calls per backend per alternating block, after one untimed warm call (default 5)")
    b.add_argument("--per-layer", action="store_true",
                   help="also time every block (stem, inverted residuals, last conv, head) of the eager and "
                        "mnv3ext module backends, and ONNX Runtime's per-block times from its profiler")
    b.add_argument("--json", metavar="FILE", help="write the results (versioned schema, see mnv3ext.bench.schema)")
    b.add_argument("--plot", metavar="FILE.png", help="bar chart of the latencies (needs matplotlib)")
    b.add_argument("--label", help="free-text name of this machine/run, shown by report")
    b.add_argument("--isa", help="force a kernel path (as MNV3EXT_ISA): scalar, avx2, avx512, neon")
    b.add_argument("--seed", type=int, default=0, help="seed of the random weights and input (default 0)")
    b.add_argument("--quiet", action="store_true", help="no progress display or status lines")

    i = sub.add_parser("info", help="print the machine / ISA / version header")
    i.add_argument("--threads", type=_int_at_least(1), default=None)
    i.add_argument("--json", action="store_true", help="print it as JSON")

    r = sub.add_parser("report", help="merge several bench --json files into one markdown table",
                       description="Merges runs (from several machines) into one markdown table; "
                                   "--plot also draws a grouped bar chart (needs matplotlib).")
    r.add_argument("files", nargs="+", metavar="FILE.json")
    r.add_argument("--plot", nargs="?", const="mnv3ext-report.png", metavar="FILE.png",
                   help="write a bar chart (default file name: %(const)s)")
    r.add_argument("--metric", choices=("median", "p10", "p90"), default="median")
    r.add_argument("-o", "--output", metavar="FILE.md", help="write the markdown here instead of stdout")

    o = sub.add_parser("bench-ops", help="per-op table: each depthwise/SE layer, eager vs mnv3ext vs roofline; "
                                         "--kinds pw: each 1x1 conv, the stem and classifier vs ONNX Runtime",
                       description="Every depthwise and SE layer of MobileNetV3-Large/-Small at 224x224 "
                                   "(mnv3ext.shapes), NCHW and channels_last: the eager sequence vs our op, "
                                   "interleaved, medians, against a copy-bandwidth roofline. --kinds pw: every "
                                   "1x1 conv, the stem and the classifier's Linear layers, ours (channels_last) "
                                   "vs ONNX Runtime on a one-node model of the layer, in alternating blocks, "
                                   "with G MAC/s and the share of the FMA peak. Markdown output.")
    _add_case_selection(o, kinds=("dw", "se", "pw"), thread_list=True)
    _add_timing(o, DEFAULT_OPS_SECONDS, per=" per case")
    o.add_argument("--passes", type=_int_at_least(1), default=1,
                   help="measure the whole table this many times and report per case the median "
                        "over passes (a shared machine drifts over minutes; default 1)")
    o.add_argument("--block-calls", type=_int_at_least(1), default=5,
                   help="pw: timed calls per alternating block (default 5)")
    o.add_argument("--fma-peak", type=_positive_float, metavar="GMACS",
                   help="pw: one core's FMA peak in G multiply-adds/s (default: bench/cpp/fma_peak.cpp, "
                        "see mnv3ext.bench.fma)")
    o.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    o.add_argument("--quiet", action="store_true")

    n = sub.add_parser("bench-neighbours", help="our op's time right after ours / eager / a cache sweep",
                       description="Times our op (as the fused modules call it) right after one call of "
                                   "another call of ours, of the eager sequence (as in bench-ops' rounds) "
                                   "or of a 16 MiB sweep: how much of an op's time in the per-op table "
                                   "comes from the caches its neighbour leaves. Markdown output.")
    _add_case_selection(n)
    n.add_argument("--rounds", type=_int_at_least(1), default=150, help="timed rounds per case (default 150)")
    for sp in (b, i, r, o, n):
        sp.set_defaults(_parser=sp)
    return parser


# ---------------------------------------------------------------------------------------------
# bench

def _log_fn(quiet: bool, progress):
    if quiet:
        return lambda msg: None
    return progress.log


def run_bench(args: argparse.Namespace, log=lambda msg: None, progress=None) -> Dict[str, Any]:
    """Run ``bench`` with parsed ``args``; returns the JSON document (schema.BENCH_SCHEMA)."""
    import torch

    from .backends import BackendUnavailable, Context, prepare
    from .machine import machine_info
    from .models import as_tensor, build_model, compare, example_input
    from .per_layer import PER_LAYER_BACKENDS, measure_per_layer
    from .schema import SCHEMA_ID, SCHEMA_VERSION, clean_floats
    from .timing import alternating_blocks

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    seconds = args.seconds if args.runs is None and args.seconds is not None else None
    if args.runs is None and args.seconds is None:
        seconds = DEFAULT_SECONDS
    info = machine_info(threads)
    model = build_model(args.model, args.width, args.seed)
    x = example_input(args.batch, args.size, args.seed)
    with torch.inference_mode():
        reference = as_tensor(model(x)).clone()

    results: List[Dict[str, Any]] = []
    prepared = {}
    with tempfile.TemporaryDirectory(prefix="mnv3ext-bench-") as workdir:
        ctx = Context(model, x, threads, workdir, log)
        for k, name in enumerate(args.backends):
            if progress is not None:
                progress.set_stage(f"preparing {name}")
            entry: Dict[str, Any] = {"backend": name, "status": "ok", "reason": None, "latency_ms": None,
                                     "images_per_second": None, "speedup_vs_eager": None, "max_abs_err": None,
                                     "max_rel_err": None, "top1_agreement": None, "setup_seconds": None,
                                     "compile_seconds": None, "details": {}}
            try:
                p = prepare(name, ctx)
                entry.update(compare(p.output(), reference))
                entry["setup_seconds"] = p.setup_seconds
                entry["compile_seconds"] = p.compile_seconds
                entry["details"] = p.details
                prepared[name] = p
            except BackendUnavailable as e:
                entry.update(status="skipped", reason=str(e))
                log(f"skipped {name}: {e}")
            except Exception as e:  # noqa: BLE001 - a failing backend must not stop the others
                first = (str(e).strip().splitlines() or [""])[0]
                entry.update(status="error", reason=f"{type(e).__name__}: {first}"[:500])
                log(f"error in {name}: {entry['reason']}")
            results.append(entry)

        rounds = 0
        if prepared:
            if progress is not None:
                progress.set_stage("timing " + ", ".join(prepared))
            with torch.inference_mode():
                stats = alternating_blocks({n: p.call for n, p in prepared.items()}, block_calls=args.block_calls,
                                           warmup=args.warmup, runs=args.runs, seconds=seconds, progress=progress)
            rounds = next(iter(stats.values())).blocks
            eager = stats["eager"].median if "eager" in stats else None
            for entry in results:
                s = stats.get(entry["backend"])
                if s is None:
                    continue
                entry["latency_ms"] = s.as_dict()
                entry["images_per_second"] = args.batch / s.median
                entry["speedup_vs_eager"] = eager / s.median if eager else None

        per_layer = None
        if args.per_layer:
            wanted = [b for b in args.backends if b in PER_LAYER_BACKENDS and b in prepared]
            if not wanted:
                wanted = [b for b in ("eager", "mnv3ext")]
            if progress is not None:
                progress.set_stage("per-layer timing")
            per_layer = measure_per_layer(model, x, wanted, warmup=args.warmup, runs=args.runs, seconds=seconds,
                                          progress=progress)
            ort_names = [b for b in ("onnxruntime", "onnxruntime-nospin") if b in prepared]
            if ort_names and per_layer["rows"]:
                from .per_layer import add_ort_per_block

                if progress is not None:
                    progress.set_stage("ONNX Runtime profiler")
                add_ort_per_block(per_layer, ctx, ort_names, runs=args.runs or 50, warmup=args.warmup, log=log)
            if "mnv3ext" in prepared and per_layer["rows"]:
                from .per_layer import add_in_model_steps

                add_in_model_steps(per_layer, prepared["mnv3ext"].module, x, runs=args.runs or 50,
                                   warmup=args.warmup)

    doc = {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "label": args.label,
        "machine": info,
        "settings": {"model": args.model, "width": args.width, "batch": args.batch, "size": args.size,
                     "threads": threads, "warmup": args.warmup, "runs": args.runs, "seconds": seconds,
                     "rounds": rounds, "timing": "alternating-blocks", "block_calls": args.block_calls,
                     "backends": list(args.backends), "per_layer": bool(args.per_layer),
                     "seed": args.seed, "isa": args.isa},
        "results": results,
        "per_layer": per_layer,
    }
    return clean_floats(doc)


def _cmd_bench(args, parser) -> int:
    from .machine import format_header
    from .progress import Progress
    from .report import describe_settings, format_results, matplotlib_available, plot_runs

    if args.plot and not matplotlib_available():
        parser.error("--plot needs matplotlib, which is not installed (pip install matplotlib)")
    if args.model == "lraspp" and args.width != 1.0:
        parser.error("--width: the lraspp model exists at width 1.0 only")
    if args.isa:
        import mnv3ext

        try:
            mnv3ext.set_isa(args.isa)
        except (ValueError, RuntimeError) as e:
            parser.error(f"--isa: {e}")
    progress = Progress(enabled=False if args.quiet else None)
    try:
        doc = run_bench(args, log=_log_fn(args.quiet, progress), progress=progress)
    finally:
        progress.clear()
    out = [format_header(doc["machine"]), "", describe_settings(doc), "", format_results(doc)]
    if doc["per_layer"] is not None:
        from .per_layer import format_per_layer

        whole = {r["backend"]: r["latency_ms"]["median"] for r in doc["results"] if r["status"] == "ok"}
        out += ["", "Per-layer latency (each block timed on its own; medians, ms):", "",
                format_per_layer(doc["per_layer"], whole)]
    print("\n".join(out))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        if not args.quiet:
            print(f"\nwrote {args.json}", file=sys.stderr)
    if args.plot:
        plot_runs([doc], args.plot)
        if not args.quiet:
            print(f"wrote {args.plot}", file=sys.stderr)
    return 0 if any(r["status"] == "ok" for r in doc["results"]) else 1


# ---------------------------------------------------------------------------------------------
# info, report, bench-ops

def _cmd_info(args, parser) -> int:
    from .machine import format_header, machine_info

    info = machine_info(args.threads)
    print(json.dumps(info, indent=1) if args.json else format_header(info))
    return 0


def _cmd_report(args, parser) -> int:
    from .report import load_runs, matplotlib_available, merge_table, plot_runs

    if args.plot and not matplotlib_available():
        parser.error("--plot needs matplotlib, which is not installed (pip install matplotlib)")
    try:
        docs = load_runs(args.files)
    except ValueError as e:
        parser.error(str(e))
    text = merge_table(docs, args.metric)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)
    if args.plot:
        plot_runs(docs, args.plot, args.metric)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _cmd_bench_ops(args, parser) -> int:
    import mnv3ext

    from .machine import format_header, machine_info
    from .op_table import format_op_table, run_op_table
    from .progress import Progress

    seconds = args.seconds if args.runs is None else None
    if args.runs is None and args.seconds is None:
        seconds = DEFAULT_OPS_SECONDS
    progress = Progress(enabled=False if args.quiet else None)
    if progress.enabled:
        progress.set_stage("bench-ops")
    dwse = [k for k in args.kinds if k in ("dw", "se")]
    rows: List[Dict[str, Any]] = []
    sums: List[Dict[str, Any]] = []
    out: List[str] = []
    gemm = None
    try:
        for t in args.threads if dwse else ():
            r, s = run_op_table(models=args.models, kinds=dwse, layouts=args.layouts, match=args.match,
                                threads=t, warmup=args.warmup, runs=args.runs, seconds=seconds,
                                passes=args.passes, progress=progress)
            for item in r + s:
                item["threads"] = t
            if r:
                out.append(format_op_table(r, s, header=format_header(machine_info(t))))
            rows += r
            sums += s
        if "pw" in args.kinds:
            from .gemm_table import format_gemm_table, run_gemm_table

            g_rows, g_sums, source = run_gemm_table(
                models=args.models, match=args.match, threads=args.threads, warmup=args.warmup, runs=args.runs,
                seconds=seconds, passes=args.passes, block_calls=args.block_calls, fma_override=args.fma_peak,
                progress=progress, log=_log_fn(args.quiet, progress))
            if g_rows:
                out.append(format_gemm_table(g_rows, g_sums, source,
                                             header=format_header(machine_info(max(args.threads)))))
                gemm = {"rows": g_rows, "sums": g_sums, "fma_peak_source": source}
    finally:
        progress.clear()
    if not rows and gemm is None:
        parser.error("no case matches the selection")
    print("\n\n".join(out))
    print(f"\nKernels: {mnv3ext.current_isa()}.")
    if args.json:
        from .schema import clean_floats

        doc = {"machine": machine_info(max(args.threads)), "rows": rows, "sums": sums, "gemm": gemm}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(clean_floats(doc), f, indent=1)
            f.write("\n")
    return 0


def _cmd_bench_neighbours(args, parser) -> int:
    from .machine import format_header, machine_info
    from .neighbours import format_neighbours, measure_neighbours
    from .op_table import num_threads
    from .opcases import all_cases

    cases = all_cases(models=args.models, kinds=args.kinds, layouts=args.layouts, match=args.match)
    if not cases:
        parser.error("no case matches the selection")
    with num_threads(args.threads):
        rows = measure_neighbours(cases, rounds=args.rounds)
    # Numbers sent back from another machine mean little without its CPU, ISA and versions.
    print(format_header(machine_info(args.threads)) + "\n")
    print(format_neighbours(rows))
    return 0


_COMMANDS = {"bench": _cmd_bench, "info": _cmd_info, "report": _cmd_report, "bench-ops": _cmd_bench_ops,
             "bench-neighbours": _cmd_bench_neighbours}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _COMMANDS[args.command](args, getattr(args, "_parser", parser))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a message, not a traceback, unless asked for
        if os.environ.get("MNV3EXT_DEBUG"):
            raise
        print(f"mnv3ext {args.command}: error: {type(e).__name__}: {e}\n"
              "(set MNV3EXT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
