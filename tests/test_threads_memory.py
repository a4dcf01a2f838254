"""Thread safety, GIL release and memory (RSS) stability of the ops and of an optimized model.

* One ``mnv3ext.optimize(mobilenet_v3_small())`` model called concurrently from 8 Python threads
  gives results bit-identical to serial calls.
* The ops called concurrently from threads that each set a different ``torch.set_num_threads``
  (so the kernels split work 1-4 ways and contend for the shared worker pool) give results
  bit-identical to serial single-threaded calls, on every ISA.
* The GIL is released around the kernels: a Python "ticker" thread keeps running while a long
  kernel call runs in another thread (its largest pause is far shorter than the call), whereas
  a GIL-holding call of similar length (``sum(range(n))``) stalls it (the control experiment
  proving the measurement can see a held GIL).
* RSS (``/proc/self/statm``), in a fresh subprocess, stays flat over 10,000 calls of each op on
  every ISA and over ``MNV3EXT_RSS_MODEL_CALLS`` (default 3,000; 10,000 for the documented
  figure) calls of an optimized model. Live Python objects (``gc``) stay flat as well.
"""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest
import torch

import mnv3ext
from mnv3ext.models import mobilenet_v3_small, randomize_batchnorm_

OPS = torch.ops.mnv3ext


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def run_threads(fn, count):
    errors, results = [], [None] * count

    def body(i):
        try:
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported in the main thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


# ---------------------------------------------------------------------------------------------
# Thread safety


def test_optimized_model_from_8_threads_matches_serial():
    model = mnv3ext.optimize(randomize_batchnorm_(mobilenet_v3_small(), seed=3).eval())
    g = torch.Generator().manual_seed(0)
    inputs = [[torch.randn(1 + (i % 2), 3, 48, 48, generator=g) for _ in range(3)] for i in range(8)]
    with torch.no_grad():
        serial = [[model(x) for x in xs] for xs in inputs]

    barrier = threading.Barrier(8)

    def worker(i):
        torch.set_num_threads(1)
        barrier.wait()
        with torch.no_grad():
            return [model(x) for x in inputs[i] for _ in range(2)][::2]

    concurrent = run_threads(worker, 8)
    for i in range(8):
        for a, b in zip(serial[i], concurrent[i]):
            assert torch.equal(a, b), f"thread {i} differs from the serial result"


def op_cases(g):
    x = torch.randn(2, 64, 28, 28, generator=g)
    x_cl = torch.randn(1, 96, 21, 19, generator=g).contiguous(memory_format=torch.channels_last)
    w3, w5 = torch.randn(64, 1, 3, 3, generator=g), torch.randn(96, 1, 5, 5, generator=g) / 5
    b64, b96 = torch.randn(64, generator=g), torch.randn(96, generator=g)
    packed = OPS.pack_dwconv_weight(w5, b96)
    fc1, fc2 = torch.randn(16, 64, generator=g) / 8, torch.randn(64, 16, generator=g) / 4
    fc1c, fc2c = torch.randn(24, 96, 1, 1, generator=g) / 8, torch.randn(96, 24, 1, 1, generator=g) / 4
    b24 = torch.randn(24, generator=g)
    se_packed = OPS.pack_se_weights(fc1c, b24, fc2c, b96)
    return [
        lambda: OPS.dwconv2d(x, w3, b64, [1, 1], [1, 1], [1, 1], "relu6"),
        lambda: OPS.dwconv2d(x_cl, w3.repeat(3, 1, 1, 1)[:96], None, [2, 1], [0, 1, 2, 1], [1, 2], "hardswish"),
        lambda: OPS.dwconv2d_packed(x_cl, packed, [5, 5, 2, 2, 2, 2, 2, 2, 1, 1], "hardswish"),
        lambda: OPS.dwconv2d_packed(x_cl[:, :, 1:, ::2], packed, [5, 5, 1, 1, 2, 2, 2, 2, 1, 1], "none"),
        lambda: OPS.squeeze_excite(x, fc1, None, fc2, b64, "relu", "hardsigmoid"),
        lambda: OPS.squeeze_excite(x_cl, fc1c, b24, fc2c, b96, "hardswish", "sigmoid"),
        lambda: OPS.squeeze_excite_packed(x_cl, se_packed, 24, "hardswish", "sigmoid"),
    ]


def test_ops_from_threads_with_different_thread_settings_match_serial(isa):
    cases = op_cases(torch.Generator().manual_seed(1))
    with torch.no_grad():
        serial = [case() for case in cases]
    settings = [1, 2, 3, 4, 1, 2]
    seen = [None] * len(settings)
    barrier = threading.Barrier(len(settings))

    def worker(i):
        torch.set_num_threads(settings[i])
        seen[i] = torch.get_num_threads()
        barrier.wait()
        outs = []
        for rep in range(4):
            for j in range((i + rep) % len(cases), (i + rep) % len(cases) + len(cases)):
                outs.append((j % len(cases), cases[j % len(cases)]()))
        return outs

    for outs in run_threads(worker, len(settings)):
        for j, out in outs:
            assert torch.equal(out, serial[j]), f"case {j} differs from the serial result"
    assert seen == settings, f"per-thread torch thread settings not honoured: {seen}"


# ---------------------------------------------------------------------------------------------
# GIL release


def longest_ticker_pause(call):
    """Run ``call`` in this thread while a Python ticker thread spins; returns
    (duration of the call, longest pause of the ticker during the call)."""
    pauses, stop = [], threading.Event()
    ready = threading.Event()

    def ticker():
        last = time.perf_counter()
        ready.set()
        while not stop.is_set():
            now = time.perf_counter()
            if now - last > 0.001:
                pauses.append((last, now))
            last = now

    t = threading.Thread(target=ticker)
    t.start()
    ready.wait()
    time.sleep(0.02)
    start = time.perf_counter()
    call()
    end = time.perf_counter()
    time.sleep(0.02)
    stop.set()
    t.join()
    inside = [min(b, end) - max(a, start) for a, b in pauses if b > start and a < end]
    return end - start, max(inside, default=0.0)


def timed_to(call, target_seconds):
    """A count of repetitions making ``call`` last about ``target_seconds``."""
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-4)
    return max(1, int(target_seconds / once))


@pytest.mark.parametrize("op", ["dwconv2d", "dwconv2d_packed", "squeeze_excite", "squeeze_excite_packed"])
def test_gil_is_released_during_kernels(op):
    g = torch.Generator().manual_seed(2)
    if op.startswith("squeeze_excite"):
        x = torch.randn(4, 256, 112, 112, generator=g)
        fc1, fc2 = torch.randn(64, 256, generator=g), torch.randn(256, 64, generator=g)
        # three calls back to back: one scalar SE call over this input takes only ~25 ms on a quiet
        # core, too short to tell a released GIL from a held one
        if op == "squeeze_excite":
            call = lambda: [OPS.squeeze_excite(x, fc1, None, fc2, None, "relu", "sigmoid")  # noqa: E731
                            for _ in range(3)]
        else:
            se_packed = OPS.pack_se_weights(fc1, None, fc2, None)
            call = lambda: [OPS.squeeze_excite_packed(x, se_packed, 64, "relu", "sigmoid")  # noqa: E731
                            for _ in range(3)]
    else:
        x = torch.randn(1, 96, 112, 112, generator=g)
        w = torch.randn(96, 1, 7, 7, generator=g)
        packed = OPS.pack_dwconv_weight(w, None)
        if op == "dwconv2d":
            call = lambda: OPS.dwconv2d(x, w, None, [1, 1], [3, 3], [1, 1], "hardswish")  # noqa: E731
        else:
            call = lambda: OPS.dwconv2d_packed(x, packed, [7, 7, 1, 1, 3, 3, 3, 3, 1, 1], "hardswish")  # noqa: E731
    with mnv3ext.use_isa("scalar"):  # the slowest path: a long single kernel call
        duration, pause = longest_ticker_pause(call)
    assert duration > 0.05, f"kernel call too short to judge ({duration * 1e3:.0f} ms)"
    # Control: a call that holds the GIL for a similar time stalls the ticker for most of it.
    n = timed_to(lambda: sum(range(100_000)), duration / 2) * 100_000
    control_duration, control_pause = longest_ticker_pause(lambda: sum(range(n)))
    print(f"{op}: call {duration * 1e3:.0f} ms, ticker's longest pause {pause * 1e3:.1f} ms; "
          f"GIL-holding control {control_duration * 1e3:.0f} ms, pause {control_pause * 1e3:.0f} ms")
    assert control_pause > 0.5 * control_duration, "control failed: the measurement cannot see a held GIL"
    assert pause < 0.5 * duration, (
        f"ticker stalled {pause * 1e3:.0f} ms of a {duration * 1e3:.0f} ms kernel call: GIL held?"
    )


# ---------------------------------------------------------------------------------------------
# Memory

RSS_SCRIPT = r"""
import gc, json, os, sys
import torch, mnv3ext
from mnv3ext.models import mobilenet_v3_small, randomize_batchnorm_
torch.set_num_threads(1)
PAGE = os.sysconf("SC_PAGE_SIZE")
ops = torch.ops.mnv3ext

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE

def measure(call, calls, warmup):
    for _ in range(warmup):
        call()
    gc.collect()
    objects = len(gc.get_objects())  # before reading RSS: the list it builds stays in the heap
    before, samples = rss(), []
    for i in range(calls):
        call()
        if (i + 1) % (calls // 10) == 0:
            samples.append(rss())
    gc.collect()
    return dict(growth=rss() - before, max_growth=max(samples) - before,
                objects=len(gc.get_objects()) - objects)

g = torch.Generator().manual_seed(0)
x = torch.randn(1, 24, 10, 9, generator=g)
x_cl = x.contiguous(memory_format=torch.channels_last)
w, b = torch.randn(24, 1, 3, 3, generator=g), torch.randn(24, generator=g)
packed = ops.pack_dwconv_weight(w, b)
fc1, fc2 = torch.randn(8, 24, generator=g), torch.randn(24, 8, 1, 1, generator=g)
se_packed = ops.pack_se_weights(fc1, None, fc2, b)
cases = {
    "pack_dwconv_weight": lambda: ops.pack_dwconv_weight(w, b),
    "dwconv2d": lambda: ops.dwconv2d(x, w, b, [2, 1], [1, 1, 1, 0], [1, 1], "hardswish"),
    "dwconv2d_packed": lambda: ops.dwconv2d_packed(x_cl, packed, [3, 3, 1, 1, 1, 1, 1, 1, 1, 1], "relu"),
    "squeeze_excite": lambda: ops.squeeze_excite(x_cl, fc1, None, fc2, b, "hardswish", "hardsigmoid"),
    "pack_se_weights": lambda: ops.pack_se_weights(fc1, None, fc2, b),
    "squeeze_excite_packed": lambda: ops.squeeze_excite_packed(x_cl, se_packed, 8, "relu", "sigmoid"),
}
result = {}
calls = int(sys.argv[1])
with torch.no_grad():
    for isa in mnv3ext.available_isas():  # warm every path and the allocator first
        with mnv3ext.use_isa(isa):
            for call in cases.values():
                for _ in range(500):
                    call()
    for isa in mnv3ext.available_isas():
        with mnv3ext.use_isa(isa):
            for name, call in cases.items():
                result[f"{name}[{isa}]"] = measure(call, calls, 500)
    model = mnv3ext.optimize(randomize_batchnorm_(mobilenet_v3_small()).eval())
    xm = torch.randn(1, 3, 32, 32)
    result["optimized mobilenet_v3_small 32x32"] = measure(lambda: model(xm), int(sys.argv[2]), 100)
print(json.dumps(result))
"""

OP_CALLS = 10_000
MODEL_CALLS = int(os.environ.get("MNV3EXT_RSS_MODEL_CALLS", "3000"))
RSS_BOUND = 1 << 20  # 1 MiB: ~100 bytes a call over 10,000 calls; a leaked 1x24x10x9 output is 8.6 KB


def test_rss_flat_over_many_calls():
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(mnv3ext.__file__)))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RSS_SCRIPT), str(OP_CALLS), str(MODEL_CALLS)],
        cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=1200,
        env={**os.environ, "PYTHONPATH": package_parent, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for name, f in figures.items():
        print(f"{name}: RSS growth {f['growth'] / 1024:.0f} KiB (max {f['max_growth'] / 1024:.0f} KiB), "
              f"live objects {f['objects']:+d}")
    for name, f in figures.items():
        assert f["max_growth"] <= RSS_BOUND, f"{name}: RSS grew {f['max_growth']} bytes"
        assert abs(f["objects"]) <= 50, f"{name}: {f['objects']} more live Python objects"
