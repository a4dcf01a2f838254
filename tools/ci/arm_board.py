"""Checks of the ``board`` stage of tools/ci/arm_emulated.sh: the README's "ARM boards" steps,
run on a small configuration under qemu, and their results checked on the host.

    arm_board.py board [--size 64] --json FILE [bench options...]   (emulated aarch64 Python)
        The README's board steps in one process (under qemu every start of Python pays for
        importing torch, about a minute): ``mnv3ext info`` (must report the NEON path), the
        optimize check below, then ``mnv3ext bench --json FILE`` with the given options. The CLI
        steps call mnv3ext.bench.cli.main, the function the ``mnv3ext`` console script runs.
    arm_board.py optimize [--size 64]       (emulated aarch64 Python)
        mnv3ext.optimize() of MobileNetV3-Small (mnv3ext.models, the bench's fixed random
        weights) matches eager within 1e-4 of max |eager output|, on the NEON path; every
        depthwise conv and SE block of the eager model is fused, and the summary lists nothing as
        left unfused or not traceable (so the 1x1/block ops count too, as soon as the summary
        reports them); no depthwise nn.Conv2d or SqueezeExcitation is left in the result.
    arm_board.py validate FILE --arch A --isa I --backends eager,mnv3ext[,...]   (host)
        FILE (written by ``mnv3ext bench --json``) validates against mnv3ext.bench.schema with
        the full jsonschema check, reports machine arch A and kernel path I, and every listed
        backend ran (status ok) with well-formed numbers and outputs matching eager. Nothing
        about speed is checked: the times of an emulated run are meaningless.

Exit status 0 when every check holds; each failure is printed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

RTOL = 1e-4  # mnv3ext.check.OUTPUT_RTOL, the tolerance optimize() is held to
ORT_RTOL = 1e-3  # another runtime's kernels sum in another order


def _fail(errors):
    for e in errors:
        print(f"FAILED: {e}", file=sys.stderr)
    return 1 if errors else 0


def cmd_optimize(args) -> int:
    import torch
    from torch import nn

    import mnv3ext
    from mnv3ext.bench.models import build_model, example_input
    from mnv3ext.models import SqueezeExcitation

    errors = []
    if mnv3ext.current_isa() != args.isa:
        errors.append(f"kernel path in use is {mnv3ext.current_isa()!r}, expected {args.isa!r}")
    model = build_model("small", 1.0, args.seed)
    x = example_input(1, args.size, args.seed)
    depthwise = [n for n, m in model.named_modules()
                 if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels]
    se_blocks = [n for n, m in model.named_modules() if isinstance(m, SqueezeExcitation)]
    with torch.inference_mode():
        want = model(x)
    optimized = mnv3ext.optimize(model)
    with torch.inference_mode():
        got = optimized(x)
    summary = optimized.mnv3ext_summary
    print(summary)

    scale = want.abs().max().item()
    err = (got - want).abs().max().item()
    rel = err / scale if scale else err
    print(f"MobileNetV3-Small {args.size}x{args.size}: max |optimized - eager| = {err:.3g} "
          f"({rel:.3g} of max |eager|), tolerance {RTOL:g}")
    if tuple(got.shape) != tuple(want.shape):
        errors.append(f"output shape {tuple(got.shape)} != eager {tuple(want.shape)}")
    if not math.isfinite(rel) or rel > RTOL:
        errors.append(f"optimized output differs from eager by {rel:.3g} of max |eager| (> {RTOL:g})")
    if len(summary.fused_depthwise) != len(depthwise):
        errors.append(f"{len(summary.fused_depthwise)} depthwise convs fused, the model has {len(depthwise)}")
    # An SE block is fused on its own or folded into the 1x1 conv after it (se_folded).
    if len(summary.fused_se) + len(getattr(summary, "se_folded", ())) < len(se_blocks):
        errors.append(f"{len(summary.fused_se)} squeeze-excite blocks fused, the model has {len(se_blocks)}")
    # Whatever the summary lists as a candidate left alone (depthwise, SE, BatchNorm, 1x1 conv or
    # any op kind it learns later), as a compute layer left on PyTorch or as an untraceable
    # module fails the check.
    for field in ("unfused", "left_on_pytorch", "fallback"):
        for entry in getattr(summary, field, None) or []:
            errors.append(f"summary.{field}: {' | '.join(map(str, entry)) if isinstance(entry, tuple) else entry}")
    left = [f"{n} ({type(m).__name__})" for n, m in optimized.named_modules()
            if type(m) is SqueezeExcitation or (isinstance(m, nn.Conv2d) and m.groups > 1)]
    if left:
        errors.append(f"still in the optimized model: {', '.join(left)}")
    if not errors:
        print(f"ok: {len(depthwise)} depthwise + {len(se_blocks)} SE fused, "
              f"{len(summary.pointwise)} 1x1 convs on mnv3ext, nothing left unfused or on PyTorch")
    return _fail(errors)


def cmd_board(args, bench_args) -> int:
    import contextlib
    import io
    import time

    from mnv3ext.bench.cli import main as cli

    t0 = time.perf_counter()
    print("$ mnv3ext info", flush=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli(["info"])
    print(out.getvalue(), end="")
    errors = []
    if rc != 0:
        errors.append(f"mnv3ext info exited with {rc}")
    if not any(line.startswith("ISA:") and f"{args.isa} in use" in line for line in out.getvalue().splitlines()):
        errors.append(f"mnv3ext info does not report the {args.isa} path in use")
    print(f"({time.perf_counter() - t0:.0f} s)\n$ optimize() of MobileNetV3-Small vs eager", flush=True)
    t0 = time.perf_counter()
    if cmd_optimize(args):
        errors.append("the optimize() check failed (above)")
    cmd = ["bench", "--size", str(args.size), *bench_args, "--json", args.json]
    print(f"({time.perf_counter() - t0:.0f} s)\n$ mnv3ext {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    rc = cli(cmd)
    if rc != 0:
        errors.append(f"mnv3ext bench exited with {rc}")
    print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return _fail(errors)


def _finite_positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def cmd_validate(args) -> int:
    import jsonschema  # noqa: F401  (the full schema check, not validate()'s key-only fallback)

    from mnv3ext.bench.schema import validate

    with open(args.file, encoding="utf-8") as f:
        doc = json.load(f)
    errors = []
    try:
        validate(doc)
    except ValueError as e:
        errors.append(f"{args.file}: schema: {e}")
    machine = doc.get("machine", {})
    if machine.get("arch") != args.arch:
        errors.append(f"{args.file}: machine.arch {machine.get('arch')!r}, expected {args.arch!r}")
    if machine.get("isa_in_use") != args.isa:
        errors.append(f"{args.file}: machine.isa_in_use {machine.get('isa_in_use')!r}, expected {args.isa!r}")
    by = {r.get("backend"): r for r in doc.get("results", [])}
    for name in args.backends.split(","):
        r = by.get(name)
        if r is None:
            errors.append(f"{args.file}: no result for backend {name}")
            continue
        if r.get("status") != "ok":
            errors.append(f"{args.file}: {name}: status {r.get('status')!r} ({r.get('reason')})")
            continue
        lat = r.get("latency_ms") or {}
        for key in ("median", "p10", "p90", "min", "max"):
            if not _finite_positive(lat.get(key)):
                errors.append(f"{args.file}: {name}: latency_ms.{key} = {lat.get(key)!r}")
        if not lat.get("n") or lat["n"] < 1:
            errors.append(f"{args.file}: {name}: latency_ms.n = {lat.get('n')!r}")
        if not _finite_positive(r.get("images_per_second")):
            errors.append(f"{args.file}: {name}: images_per_second = {r.get('images_per_second')!r}")
        tol = ORT_RTOL if name in ("onnxruntime", "openvino") else RTOL
        rel = r.get("max_rel_err")
        if not isinstance(rel, (int, float)) or not math.isfinite(rel) or rel > tol:
            errors.append(f"{args.file}: {name}: max_rel_err {rel!r} against eager (tolerance {tol:g})")
        if name.startswith("mnv3ext") and not (r.get("details") or {}).get("fused_depthwise"):
            errors.append(f"{args.file}: {name}: details report no fused depthwise conv ({r.get('details')})")
        print(f"{args.file}: {name}: ok (median {lat.get('median')} ms over {lat.get('n')} rounds, "
              f"max_rel_err {rel})")
    return _fail(errors)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("optimize", "board"):
        o = sub.add_parser(name)
        o.add_argument("--size", type=int, default=64, help="input size (of bench too)")
        o.add_argument("--seed", type=int, default=0)
        o.add_argument("--isa", default="neon")
        if name == "board":
            o.add_argument("--json", required=True, help="bench --json FILE; other options go to bench")
    v = sub.add_parser("validate")
    v.add_argument("file")
    v.add_argument("--arch", required=True)
    v.add_argument("--isa", required=True)
    v.add_argument("--backends", required=True)
    args, rest = p.parse_known_args(argv)
    if args.command == "board":
        return cmd_board(args, rest)
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    return {"optimize": cmd_optimize, "validate": cmd_validate}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
