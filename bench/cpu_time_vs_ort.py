"""Thread CPU time per inference of ``mnv3ext.optimize(m)`` against ONNX Runtime, 1 thread.

On a shared host whose other jobs take the cores, wall-clock latencies swing by several times
between runs; the CPU time the calling thread spends in one inference does not count the time
it waits for a core, so its ratio between two backends measured in alternating blocks in one
process stays usable there. At 1 thread both run in the calling thread (ONNX Runtime with
``intra_op_num_threads=1`` runs its nodes in the caller), so the thread's CPU time is the
inference's. Cache and memory contention from the other jobs still reach both.

    python bench/cpu_time_vs_ort.py --model large --batch 1 --blocks 60
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
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--blocks", type=int, default=60, help="alternating blocks (default 60)")
    p.add_argument("--calls", type=int, default=3, help="timed calls per backend per block (default 3)")
    args = p.parse_args()
    import onnxruntime as ort
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = (mobilenet_v3_large if args.model == "large" else mobilenet_v3_small)().eval()
    x = torch.randn(args.batch, 3, 224, 224)
    fast = mnv3ext.optimize(model)
    buf = io.BytesIO()
    torch.onnx.export(model, x, buf, dynamo=False, opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    backends = {"mnv3ext": lambda: fast(x), "onnxruntime": lambda: session.run(None, feed)}
    times = {k: [] for k in backends}
    with torch.no_grad():
        for run in backends.values():
            for _ in range(5):
                run()
        for _ in range(args.blocks):
            for name, run in backends.items():
                run()  # warm call after the other backend ran
                for _ in range(args.calls):
                    t0 = time.thread_time()
                    run()
                    times[name].append(time.thread_time() - t0)
    print(f"MobileNetV3-{args.model.capitalize()}, batch {args.batch}, 1 thread, thread CPU ms per inference "
          f"({args.blocks} alternating blocks x {args.calls} calls)")
    for name, t in times.items():
        print(f"  {name:12s} median {np.median(t) * 1e3:8.3f}  p10 {np.percentile(t, 10) * 1e3:8.3f}")
    med = np.median(times["mnv3ext"]) / np.median(times["onnxruntime"])
    p10 = np.percentile(times["mnv3ext"], 10) / np.percentile(times["onnxruntime"], 10)
    print(f"  mnv3ext / onnxruntime: {med:.2f} (medians), {p10:.2f} (p10)")


if __name__ == "__main__":
    main()
