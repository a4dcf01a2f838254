"""Each top-level stage of MobileNetV3 (stem, every inverted-residual block, last conv) on its own:
the module ``mnv3ext.optimize`` makes of it against ONNX Runtime running that stage exported
alone, thread CPU time, 1 thread, alternating blocks in one process. ONNX Runtime's time includes
the layout reorders it adds around a lone stage (NCHW in and out), which it mostly avoids inside a
whole model: this table flatters mnv3ext; ``mnv3ext bench --per-layer`` (ORT's profiler inside
the whole model) does not.

    python bench/blocks_vs_ort.py --model large
"""
from __future__ import annotations

import argparse
import io
import time
import warnings

import numpy as np
import torch

import mnv3ext
from mnv3ext.models import mobilenet_v3_large, mobilenet_v3_small


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("large", "small"), default="large")
    p.add_argument("--blocks", type=int, default=30)
    args = p.parse_args()
    import onnxruntime as ort
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    model = (mobilenet_v3_large if args.model == "large" else mobilenet_v3_small)().eval()
    stages, h = [], torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for i, stage in enumerate(model.features):
            stages.append((i, stage, h))
            h = stage(h)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    print("| stage | mnv3ext module | mnv3ext µs | ORT µs | ratio |\n|---|---|---|---|---|")
    total = [0.0, 0.0]
    for i, stage, inp in stages:
        buf = io.BytesIO()
        torch.onnx.export(stage, inp, buf, dynamo=False, opset_version=17)
        session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: inp.numpy()}
        fast = mnv3ext.optimize(stage)
        leaves = [m for n, m in fast.named_modules() if n and not list(m.children())]
        x = inp.contiguous(memory_format=torch.channels_last)
        run = (lambda: leaves[0](x)) if len(leaves) == 1 else (lambda: fast(x))
        backends = {"ours": run, "ort": lambda: session.run(None, feed)}
        t = {k: [] for k in backends}
        with torch.no_grad():
            for _ in range(args.blocks):
                for k, f in backends.items():
                    f()
                    for _ in range(3):
                        t0 = time.thread_time()
                        f()
                        t[k].append(time.thread_time() - t0)
        ours, ref = np.median(t["ours"]) * 1e6, np.median(t["ort"]) * 1e6
        total[0] += ours
        total[1] += ref
        kind = type(leaves[0]).__name__ if len(leaves) == 1 else f"{len(leaves)} modules"
        print(f"| features.{i} | {kind} | {ours:.1f} | {ref:.1f} | {ours / ref:.2f} |")
    print(f"| sum | | {total[0]:.1f} | {total[1]:.1f} | {total[0] / total[1]:.2f} |")


if __name__ == "__main__":
    main()
