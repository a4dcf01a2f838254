"""Whole-model pytest-benchmark suite: MobileNetV3-Large / -Small (and LR-ASPP) at 224x224, batch 1,
on every backend of ``python -m mnv3ext bench`` (built by the same code: mnv3ext.bench.backends).

    python3 -m pytest bench/bench_models.py [--bench-threads 1] [--bench-compile] [-k small]

Backends whose runtime is not installed are skipped with the reason; torch.compile ones only run
with --bench-compile. The output is checked against eager before timing. For the interleaved
side-by-side measurement (the one to quote), use ``python -m mnv3ext bench``.
"""
from __future__ import annotations

import tempfile

import pytest
import torch

from mnv3ext.bench.backends import BACKENDS, BackendUnavailable, Context, prepare
from mnv3ext.bench.models import as_tensor, build_model, compare, example_input

MODELS = ("large", "small", "lraspp")
SIZE = 224
_COMPILE = {"compile", "mnv3ext-compile"}

_models = {}
_workdir = tempfile.TemporaryDirectory(prefix="mnv3ext-bench-models-")


def _context(model_name: str, threads: int) -> Context:
    key = (model_name, threads)
    if key not in _models:
        model = build_model(model_name)
        x = example_input(1, SIZE)
        with torch.inference_mode():
            ref = as_tensor(model(x)).clone()
        ctx = Context(model, x, threads, tempfile.mkdtemp(dir=_workdir.name))
        _models[key] = (ctx, ref)
    return _models[key]


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("model_name", MODELS)
def test_model(benchmark, request, bench_threads, model_name, backend):
    if backend in _COMPILE and not request.config.getoption("--bench-compile"):
        pytest.skip("torch.compile backends need --bench-compile")
    ctx, ref = _context(model_name, bench_threads)
    try:
        p = prepare(backend, ctx)
    except BackendUnavailable as e:
        pytest.skip(str(e))
    numerics = compare(p.output(), ref)
    assert numerics["max_rel_err"] < 1e-3, numerics
    benchmark.group = f"{model_name}-{SIZE}px-{bench_threads}thr"
    benchmark.extra_info.update(setup_seconds=p.setup_seconds, **numerics)
    benchmark(p.call)
