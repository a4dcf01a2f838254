"""The backends of ``python -m mnv3ext bench``: how each turns the eager model into a callable.

=================  ==========================================================================
``eager``          the model as built, NCHW input
``eager-cl``       BatchNorms folded into the convs, weights and input channels_last
``mnv3ext``        ``mnv3ext.optimize(model)`` exactly as a user calls it (its default memory
                   format), NCHW input
``mnv3ext-cl``     ``optimize(model, memory_format=torch.channels_last)``, channels_last input
``mnv3ext-nchw``   ``optimize(model, memory_format=torch.contiguous_format)``: NCHW kernels
``compile``        ``torch.compile(model, options={"freezing": True})`` (inductor)
``mnv3ext-compile``  ``torch.compile(optimize(model), options={"freezing": True})``
``onnxruntime``    ONNX export of the eager model, ONNX Runtime CPU provider, fp32, ORT's default
                   session options (its intra-op pool spins after each call) but
                   ``intra_op_num_threads`` = the thread count
``onnxruntime-nospin``  the same with ``session.intra_op.allow_spinning = 0`` (an extra, not in
                   the default list)
``openvino``       the same ONNX file, OpenVINO CPU plugin, fp32 (``INFERENCE_PRECISION_HINT=f32``:
                   on CPUs with bf16/AMX OpenVINO would otherwise silently run in bf16)
=================  ==========================================================================

Every backend is prepared by a function that returns a :class:`Prepared` or raises
:class:`BackendUnavailable` (reported as *skipped*: optional runtime not installed, feature
absent in this build); any other exception is reported as *error* with its message. Thread
counts: torch via ``torch.set_num_threads`` (set by the caller), ONNX Runtime
``intra_op_num_threads``, OpenVINO ``INFERENCE_NUM_THREADS``. Each runtime otherwise runs as its
users get it (ORT's spinning pool included); the whole-model bench times the backends in
alternating blocks (:func:`mnv3ext.bench.timing.alternating_blocks`) so a pool spinning after
its last call steals the cores only from the next block's untimed warm call.
"""
from __future__ import annotations

import importlib
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from .models import as_tensor, fold_batchnorms

__all__ = ["BACKENDS", "DEFAULT_BACKENDS", "BackendUnavailable", "Context", "Prepared", "prepare",
           "export_onnx", "import_optional"]


class BackendUnavailable(Exception):
    """The backend cannot run here (missing optional package or feature): reported as skipped."""


@dataclass
class Context:
    model: nn.Module  # eager, eval mode
    x: torch.Tensor  # NCHW input
    threads: int
    workdir: str  # where the ONNX file goes
    log: Callable[[str], None] = lambda msg: None
    _onnx: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Prepared:
    name: str
    call: Callable[[], Any]  # the timed call
    setup_seconds: float  # building: optimize / export / session / compile (incl. first call)
    compile_seconds: Optional[float] = None  # first call of a compiled model (part of setup)
    details: Dict[str, Any] = field(default_factory=dict)
    module: Optional[nn.Module] = None  # the torch module, when there is one (per-layer)
    memory_format: Optional[torch.memory_format] = None

    def output(self) -> torch.Tensor:
        with torch.inference_mode():
            return as_tensor(self.call())


def import_optional(name: str, pip_name: Optional[str] = None):
    """Import an optional runtime, or raise BackendUnavailable naming the pip package."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise BackendUnavailable(
            f"{pip_name or name} is not installed (pip install {pip_name or name}; "
            "or pip install 'mnv3ext[bench]')"
        ) from e


def _optimize_fn():
    import mnv3ext

    fn = getattr(mnv3ext, "optimize", None)
    if fn is None:
        try:
            from mnv3ext.optimize import optimize as fn  # type: ignore
        except ImportError as e:
            raise BackendUnavailable(f"mnv3ext.optimize is not available in this build ({e})") from e
    return fn


def _torch_call(model: nn.Module, x: torch.Tensor):
    def call():
        return model(x)
    return call


def _eager(ctx: Context) -> Prepared:
    return Prepared("eager", _torch_call(ctx.model, ctx.x), 0.0, module=ctx.model,
                    memory_format=torch.contiguous_format)


def _eager_cl(ctx: Context) -> Prepared:
    t0 = time.perf_counter()
    model = fold_batchnorms(ctx.model).to(memory_format=torch.channels_last).eval()
    x = ctx.x.contiguous(memory_format=torch.channels_last)
    return Prepared("eager-cl", _torch_call(model, x), time.perf_counter() - t0, module=model,
                    memory_format=torch.channels_last)


def _optimized(ctx: Context, memory_format: Optional[torch.memory_format]):
    optimize = _optimize_fn()
    t0 = time.perf_counter()
    if memory_format is None:
        model = optimize(ctx.model)
    else:
        model = optimize(ctx.model, memory_format=memory_format)
    setup = time.perf_counter() - t0
    summary = getattr(model, "mnv3ext_summary", None)
    details: Dict[str, Any] = {}
    if summary is not None:
        details = {
            "memory_format": getattr(summary, "memory_format", None),
            "fused_depthwise": len(getattr(summary, "fused_depthwise", [])),
            "fused_se": len(getattr(summary, "fused_se", [])),
            "pointwise": len(getattr(summary, "pointwise", [])),
        }
    return model, setup, details


def _mnv3ext_variant(name: str, memory_format: Optional[torch.memory_format]):
    def prep(ctx: Context) -> Prepared:
        model, setup, details = _optimized(ctx, memory_format)
        x = ctx.x.contiguous(memory_format=torch.channels_last) if memory_format == torch.channels_last else ctx.x
        return Prepared(name, _torch_call(model, x), setup, details=details, module=model,
                        memory_format=memory_format)
    return prep


def _compiled(name: str, model: nn.Module, x: torch.Tensor, setup: float, details: Dict[str, Any]) -> Prepared:
    import torch._dynamo  # noqa: F401  (fail here, not later, if the install lacks it)

    compiled = torch.compile(model, options={"freezing": True})
    t0 = time.perf_counter()
    with torch.inference_mode():
        compiled(x)  # compiles
    first = time.perf_counter() - t0
    details = dict(details, options={"freezing": True})
    return Prepared(name, _torch_call(compiled, x), setup + first, compile_seconds=first, details=details)


def _compile(ctx: Context) -> Prepared:
    ctx.log("compiling the eager model with torch.compile (inductor, freezing) ...")
    return _compiled("compile", ctx.model, ctx.x, 0.0, {})


def _mnv3ext_compile(ctx: Context) -> Prepared:
    model, setup, details = _optimized(ctx, None)
    ctx.log("compiling the optimized model with torch.compile (inductor, freezing) ...")
    return _compiled("mnv3ext-compile", model, ctx.x, setup, details)


def export_onnx(model: nn.Module, x: torch.Tensor, path: str) -> str:
    """Export ``model`` to ``path`` (fp32, static shapes); returns which exporter worked.

    torch 2.13 still ships the TorchScript-based exporter (``dynamo=False``: deprecated, warns, but
    fast and needs no extra package); the new ``dynamo=True`` exporter needs ``onnxscript`` and is
    several times slower. The first is tried first, the second as a fallback."""
    errors: List[str] = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kwargs: Dict[str, Any] = {"dynamo": dynamo}
                if dynamo:
                    kwargs.update(verbose=False, external_data=False)
                else:
                    kwargs.update(opset_version=17)
                with torch.no_grad():
                    torch.onnx.export(model, (x,), path, input_names=["input"], **kwargs)
            return "dynamo" if dynamo else "torchscript"
        except Exception as e:  # noqa: BLE001 - report both attempts
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {type(e).__name__}: {e}".splitlines()[0])
    raise RuntimeError("ONNX export failed: " + "; ".join(errors))


def _onnx_file(ctx: Context) -> Dict[str, Any]:
    if "path" not in ctx._onnx:
        if "error" in ctx._onnx:
            raise RuntimeError(ctx._onnx["error"])
        ctx.log("exporting the eager model to ONNX ...")
        path = os.path.join(ctx.workdir, "model.onnx")
        t0 = time.perf_counter()
        try:
            exporter = export_onnx(ctx.model, ctx.x, path)
        except Exception as e:
            ctx._onnx["error"] = str(e)
            raise
        ctx._onnx.update(path=path, exporter=exporter, seconds=time.perf_counter() - t0)
    return ctx._onnx


def _onnxruntime_variant(name: str, spinning: bool):
    def prep(ctx: Context) -> Prepared:
        import_optional("onnxruntime")
        import onnxruntime as ort

        from .ort import session

        onnx = _onnx_file(ctx)
        t0 = time.perf_counter()
        sess = session(onnx["path"], ctx.threads, spinning=spinning)
        feed = {sess.get_inputs()[0].name: ctx.x.numpy()}
        setup = onnx["seconds"] + time.perf_counter() - t0

        def call():
            return sess.run(None, feed)[0]
        return Prepared(name, call, setup, details={
            "version": getattr(ort, "__version__", None), "exporter": onnx["exporter"],
            "intra_op_num_threads": ctx.threads, "allow_spinning": spinning,
            "session_options": "defaults" + ("" if spinning else " + session.intra_op.allow_spinning=0")})
    return prep


def _openvino(ctx: Context) -> Prepared:
    ov = import_optional("openvino")
    onnx = _onnx_file(ctx)
    t0 = time.perf_counter()
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": ctx.threads, "INFERENCE_PRECISION_HINT": "f32",
              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    compiled = core.compile_model(onnx["path"], "CPU", config)
    request = compiled.create_infer_request()
    feed = {0: ctx.x.numpy()}
    output = compiled.output(0)
    setup = onnx["seconds"] + time.perf_counter() - t0

    def call():
        return request.infer(feed, share_inputs=True)[output]
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    precision = precision.to_string() if hasattr(precision, "to_string") else str(precision)
    return Prepared("openvino", call, setup, details={
        "version": getattr(ov, "__version__", None), "exporter": onnx["exporter"],
        "inference_num_threads": ctx.threads, "precision": precision})


BACKENDS: Dict[str, Callable[[Context], Prepared]] = {
    "eager": _eager,
    "eager-cl": _eager_cl,
    "mnv3ext": _mnv3ext_variant("mnv3ext", None),
    "mnv3ext-cl": _mnv3ext_variant("mnv3ext-cl", torch.channels_last),
    "mnv3ext-nchw": _mnv3ext_variant("mnv3ext-nchw", torch.contiguous_format),
    "compile": _compile,
    "mnv3ext-compile": _mnv3ext_compile,
    "onnxruntime": _onnxruntime_variant("onnxruntime", True),
    "onnxruntime-nospin": _onnxruntime_variant("onnxruntime-nospin", False),
    "openvino": _openvino,
}
DEFAULT_BACKENDS = tuple(b for b in BACKENDS if b != "onnxruntime-nospin")  # the variant on request


def prepare(name: str, ctx: Context) -> Prepared:
    """Prepare backend ``name``; raises BackendUnavailable (skip) or any error (reported)."""
    if name not in BACKENDS:
        raise ValueError(f"backend: unknown {name!r}; expected one of {', '.join(BACKENDS)}")
    return BACKENDS[name](ctx)
