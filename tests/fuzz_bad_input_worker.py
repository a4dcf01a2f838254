"""Worker for tests/test_fuzz_bad_input.py: makes random bad calls, prints counts as JSON.

Run as ``python fuzz_bad_input_worker.py SEED CALLS``. Each call starts from a valid call of one
entry point (the four ``torch.ops.mnv3ext`` ops and the numpy surface ``mnv3ext._C.dwconv2d`` /
``pack_dwconv`` / ``squeeze_excite``) and breaks 1-3 things: a tensor/array argument replaced by
a wrong dtype, the meta device, a sparse / mkldnn / quantized tensor, a wrong shape (0-6 dims,
sizes 0-9), a huge expanded view, a requires-grad tensor, or a non-tensor (str, None, number,
list, dict, bytes, object); an int-list argument replaced by a wrong length, floats, strings,
None, bools, tensors or values outside int32/int64; a string argument replaced by near-miss,
empty, NUL-containing, non-ASCII or very long strings, or non-strings; or arguments dropped,
added or passed under wrong keyword names.

A call must return or raise TypeError / ValueError / RuntimeError (NotImplementedError, which
torch raises for unsupported backends, is a RuntimeError) or, from the numpy surface asked for
an impossible output size, MemoryError. Anything else is reported as
"unexpected"; a crash kills this process, which the test sees. Before each call its
description goes to stderr, so the last line names the call that crashed.
"""
from __future__ import annotations

import faulthandler
import json
import random
import time
import resource
import sys

# Bound the address space so a call asking for a huge output fails with a clean allocation
# error instead of eating the shared machine's memory.
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
faulthandler.enable()

import numpy as np  # noqa: E402
import torch  # noqa: E402

import mnv3ext  # noqa: E402
from mnv3ext import _C  # noqa: E402

# MemoryError: numpy's clean refusal of an impossible output allocation (the torch ops raise
# RuntimeError for the same thing).
EXPECTED = (TypeError, ValueError, RuntimeError, MemoryError)
HUGE_INTS = [2**31 - 1, 2**31, -2**31, 2**63 - 1, -2**63, 2**64, -1, 0]
STRINGS = ["", "RELU", "relu ", " relu", "Relu6", "sigmoid", "hardsigmoid", "hardswish", "relu",
           "none", "None", "relu\x00", "\x00", "relü", "hard_swish", "x" * 10_000, "gelu", "swish"]
DTYPES = [torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8,
          torch.int8, torch.bool, torch.complex64]
NP_DTYPES = [np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64, object]


def junk(rng: random.Random):
    """A value of the wrong kind for anything."""
    return rng.choice([
        lambda: None, lambda: "input", lambda: b"\x00\x01", lambda: 3, lambda: 2.5, lambda: True,
        lambda: [1.0, 2.0], lambda: [[1.0]], lambda: {"a": 1}, lambda: object(), lambda: (),
        lambda: float("nan"), lambda: np.zeros(3, np.float32), lambda: torch.tensor(1.0),
        lambda: torch.device("meta"), lambda: torch.float32, lambda: slice(1, 2),
    ])()


def random_shape(rng):
    return tuple(rng.choice([0, 1, 2, 3, 5, 8, 9]) for _ in range(rng.randint(0, 6)))


def bad_tensor(rng: random.Random, good: torch.Tensor):
    if good.numel() > 100_000 or good.device.type != "cpu" or good.layout != torch.strided:
        return junk(rng)  # already broken by an earlier mutation (huge view, meta, sparse)
    kind = rng.randrange(11)
    if kind == 0:
        dtype = rng.choice(DTYPES)
        return good.to(dtype) if dtype != torch.complex64 else torch.complex(good, good)
    if kind == 1:
        return good.to("meta")
    if kind == 2:
        return torch.randn(random_shape(rng))
    if kind == 3:
        return good.to_sparse()
    if kind == 4:
        return good.to_mkldnn() if good.dim() in (1, 2, 3, 4, 5) and good.numel() else good.to_sparse()
    if kind == 5:
        return torch.quantize_per_tensor(good, 0.1, 0, torch.qint8)
    if kind == 6:  # a view far too big to materialise (stride 0), or with a huge dim
        shape = list(good.shape) or [1]
        shape[rng.randrange(len(shape))] = rng.choice([2**31, 2**40])
        return torch.zeros([1] * len(shape)).expand(*shape)
    if kind == 7:
        return good.clone().requires_grad_(True)
    if kind == 8:
        return torch.randn(tuple(s + rng.choice([-1, 1, 7]) if s > 1 else s + 1 for s in good.shape))
    if kind == 9:
        return good[..., :0] if good.dim() else good.reshape(1)[:0]
    return junk(rng)


def bad_array(rng: random.Random, good: np.ndarray):
    kind = rng.randrange(6)
    if kind == 0:
        return good.astype(rng.choice(NP_DTYPES))
    if kind == 1:
        return np.zeros(random_shape(rng), np.float32)
    if kind == 2:  # non-contiguous (the numpy surface copies to C order)
        return np.asfortranarray(good) if good.ndim > 1 else good[::-1]
    if kind == 3:
        return torch.from_numpy(good)
    if kind == 4:
        return good.reshape(-1)
    return junk(rng)


def bad_ints(rng: random.Random, good):
    kind = rng.randrange(8)
    n = len(good)
    if kind == 0:
        return [rng.randint(-2, 3) for _ in range(rng.choice([0, 1, 3, 5]))]
    if kind == 1:
        return [float(v) + 0.5 for v in good]
    if kind == 2:
        return [rng.choice(HUGE_INTS) for _ in range(n)]
    if kind == 3:
        return [rng.choice(["1", None, True, 1.0, torch.tensor(1), [1]]) for _ in range(n)]
    if kind == 4:
        return rng.choice([None, "11", 1.5, torch.tensor(good), np.array(good), -1, 0, 2**40])
    if kind == 5:
        v = list(good)
        v[rng.randrange(n)] = rng.choice(HUGE_INTS)
        return v
    if kind == 6:
        return tuple(v + rng.choice([-5, -1, 1, 30]) for v in good)
    return junk(rng)


def bad_str(rng: random.Random, good):
    if rng.random() < 0.7:
        return rng.choice(STRINGS)
    return junk(rng)


# Entry points: (name, function, valid-argument factory, kinds of the positional arguments).
def dw_args():
    return [torch.randn(2, 8, 6, 5), torch.randn(8, 1, 3, 3), torch.randn(8), [1, 2], [1, 1],
            [1, 1], "relu"]


def packed_args():
    w = torch.randn(8, 1, 3, 3)
    return [torch.randn(2, 8, 6, 5), torch.ops.mnv3ext.pack_dwconv_weight(w, None),
            [3, 3, 2, 1, 1, 0, 1, 2, 1, 1], "hardswish"]


def se_args():
    return [torch.randn(2, 8, 5, 4), torch.randn(4, 8), torch.randn(4), torch.randn(8, 4, 1, 1),
            torch.randn(8), "relu", "sigmoid"]


def np_dw_args():
    return [np.random.randn(2, 8, 6, 5).astype(np.float32), np.random.randn(8, 1, 3, 3).astype(np.float32),
            np.random.randn(8).astype(np.float32), [1, 1], [1, 1], [1, 1], "relu6", False, 1]


def np_pack_args():
    return [np.random.randn(8, 1, 5, 5).astype(np.float32), np.random.randn(8).astype(np.float32)]


def np_se_args():
    return [np.random.randn(2, 8, 5, 4).astype(np.float32), np.random.randn(4, 8).astype(np.float32),
            None, np.random.randn(8, 4).astype(np.float32), np.random.randn(8).astype(np.float32),
            "hardswish", "hardsigmoid", False, 1]


ENTRY_POINTS = [
    ("dwconv2d", torch.ops.mnv3ext.dwconv2d, dw_args, ["t", "t", "t", "i", "i", "i", "s"]),
    ("pack_dwconv_weight", torch.ops.mnv3ext.pack_dwconv_weight, lambda: dw_args()[1:3], ["t", "t"]),
    ("dwconv2d_packed", torch.ops.mnv3ext.dwconv2d_packed, packed_args, ["t", "t", "i", "s"]),
    ("squeeze_excite", torch.ops.mnv3ext.squeeze_excite, se_args, ["t", "t", "t", "t", "t", "s", "s"]),
    ("_C.dwconv2d", _C.dwconv2d, np_dw_args, ["a", "a", "a", "i", "i", "i", "s", "b", "n"]),
    ("_C.pack_dwconv", _C.pack_dwconv, np_pack_args, ["a", "a"]),
    ("_C.squeeze_excite", _C.squeeze_excite, np_se_args, ["a", "a", "a", "a", "a", "s", "s", "b", "n"]),
]


def mutate(rng: random.Random, args, kinds):
    """Break 1-3 things; returns (args, kwargs, description)."""
    args, kwargs, notes = list(args), {}, []
    for _ in range(rng.choice([1, 1, 2, 3])):
        what = rng.random()
        if what < 0.08:
            k = rng.randint(1, len(args))
            args = args[:-k]
            kinds = kinds[:-k]
            notes.append(f"dropped {k} args")
        elif what < 0.14:
            extra = [junk(rng) for _ in range(rng.randint(1, 3))]
            args = args + extra
            kinds = kinds + ["x"] * len(extra)
            notes.append(f"added {len(extra)} args")
        elif what < 0.18:
            kwargs[rng.choice(["inputs", "bias", "weight", "activation", "foo", "stride"])] = junk(rng)
            notes.append(f"kwargs {sorted(kwargs)}")
        elif args:
            i = rng.randrange(len(args))
            kind = kinds[i]
            if kind == "t":
                args[i] = bad_tensor(rng, args[i]) if isinstance(args[i], torch.Tensor) else junk(rng)
            elif kind == "a":
                args[i] = bad_array(rng, args[i]) if isinstance(args[i], np.ndarray) else junk(rng)
            elif kind == "i":
                args[i] = bad_ints(rng, args[i]) if isinstance(args[i], (list, tuple)) else junk(rng)
            elif kind == "s":
                args[i] = bad_str(rng, args[i])
            elif kind == "b":
                args[i] = rng.choice([None, "yes", 2, 1.5, np.bool_(True)])
            elif kind == "n":
                args[i] = rng.choice([0, -1, -2**31, 2**31 - 1, 2**31, 2**63, None, "2", 1.5, 64])
            else:
                args[i] = junk(rng)
            notes.append(f"arg{i}={describe(args[i])}")
    return args, kwargs, "; ".join(notes)


def describe(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"Tensor({v.dtype}, {v.layout}, {v.device}, {tuple(v.shape)}, rg={v.requires_grad})"
    if isinstance(v, np.ndarray):
        return f"ndarray({v.dtype}, {v.shape}, C={v.flags.c_contiguous})"
    r = repr(v)
    return r if len(r) < 60 else r[:57] + "..."


def main(seed: int, calls: int) -> None:
    rng = random.Random(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    isas = mnv3ext.available_isas()
    counts = {"calls": 0, "skipped": 0, "returned": 0, "raised": {}, "unexpected": [], "slow": []}
    for index in range(calls):
        name, fn, factory, kinds = ENTRY_POINTS[rng.randrange(len(ENTRY_POINTS))]
        isa = rng.choice(isas)
        mnv3ext.set_isa(isa)
        try:
            args, kwargs, desc = mutate(rng, factory(), kinds)
        except Exception:  # building the bad value itself failed (e.g. to_mkldnn of a shape)
            counts["skipped"] += 1
            continue
        print(f"#{index} {isa} {name}: {desc}", file=sys.stderr, flush=True)
        counts["calls"] += 1
        start = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except EXPECTED as e:
            key = type(e).__name__
            counts["raised"][key] = counts["raised"].get(key, 0) + 1
        except BaseException as e:  # noqa: BLE001 - any other type is the finding
            counts["unexpected"].append(f"#{index} {name}: {desc} -> {type(e).__name__}: {str(e)[:200]}")
        else:
            counts["returned"] += 1
            if not isinstance(result, (torch.Tensor, np.ndarray)):
                counts["unexpected"].append(f"#{index} {name}: {desc} -> returned {type(result).__name__}")
        elapsed = time.perf_counter() - start
        if elapsed > 2.0:
            counts["slow"].append(f"#{index} {name}: {desc} ({elapsed:.1f} s)")
    print(json.dumps(counts))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
