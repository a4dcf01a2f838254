"""GEMM-family benchmark cases (``bench-ops --kinds pw``): every 1x1 conv of MobileNetV3-Large and
-Small, the stem and the classifier's Linear layers (``mnv3ext.shapes.ALL_GEMM``), ours against
ONNX Runtime running a one-node model of the same layer.

* ours: the eager entry point with weights packed once by ``torch.ops.mnv3ext.pack_gemm_weight``
  (the stem's weight with its taps in NHWC order, as ``mnv3ext.nn.FusedConv2d`` packs it), as the
  optimized modules call it, channels_last activations:
  ``mnv3ext.ops.pointwise_conv2d_packed(x, packed, C_out, act, residual, input_scale)`` (the
  projection gets its block's residual, and the squeeze-excite gate as ``input_scale`` (N, C_in)
  when an SE precedes it), ``conv2d_packed`` (the stem), ``linear_packed`` (classifier).
* ONNX Runtime: a tiny torch module per layer -- ``Conv2d`` with the bias, then the activation
  module, ``x * scale`` before the conv where an SE precedes it (the gate fed as an (N, C_in, 1,
  1) input, as the SE's last conv produces it), ``+ residual`` after it; ``Linear`` (+ Hardswish)
  for the classifier -- exported with ``torch.onnx.export(dynamo=False)``, NCHW as ORT's users get
  it, run by a session with ORT's default options and ``intra_op_num_threads`` = the threads
  measured (:func:`mnv3ext.bench.ort.session`). ORT fuses Conv + activation itself; its NCHWc
  reorders around the conv are part of what a one-node model costs it.

Both compute the same function on the same weights and inputs (``max_rel_err`` checks it).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from .. import ops, shapes

__all__ = ["GemmCase", "gemm_case", "gemm_cases", "ACTIVATION_MODULES"]

Layer = Union[shapes.StemLayer, shapes.PwLayer, shapes.FcLayer]

ACTIVATION_MODULES: Dict[str, Callable[[], nn.Module]] = {
    "none": nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish,
}


class _PwModule(nn.Module):
    def __init__(self, conv: nn.Conv2d, activation: str, scaled: bool, residual: bool):
        super().__init__()
        self.conv, self.act = conv, ACTIVATION_MODULES[activation]()
        self.scaled, self.residual = scaled, residual

    def forward(self, *args):
        x = args[0]
        k = 1
        if self.scaled:
            x = x * args[k]
            k += 1
        y = self.act(self.conv(x))
        return y + args[k] if self.residual else y


class _Seq(nn.Module):
    def __init__(self, layer: nn.Module, activation: str):
        super().__init__()
        self.layer, self.act = layer, ACTIVATION_MODULES[activation]()

    def forward(self, x):
        return self.act(self.layer(x))


@dataclass
class GemmCase:
    layer: Layer
    threads: int
    ours: Callable[[], torch.Tensor]
    module: nn.Module  # the one-node model's torch module (NCHW)
    ort_inputs: Dict[str, Any]  # numpy arrays, NCHW
    macs: int
    ort: Optional[Callable[[], Any]] = None  # after make_ort()
    onnx_path: Optional[str] = None
    ort_session: Any = None
    details: Dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.layer.name

    @property
    def kind(self) -> str:
        return self.layer.op  # "conv" (stem), "pointwise", "linear"

    def make_ort(self, workdir: str) -> None:
        """Export the one-node model and open its ONNX Runtime session (raises ImportError
        without onnxruntime)."""
        from .ort import session

        path = os.path.join(workdir, f"{self.id}.onnx")
        args = tuple(torch.from_numpy(v) for v in self.ort_inputs.values())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.no_grad():
                torch.onnx.export(self.module, args, path, dynamo=False, opset_version=17,
                                  input_names=list(self.ort_inputs), output_names=["output"])
        sess = session(path, self.threads)
        feed = dict(self.ort_inputs)
        self.onnx_path, self.ort_session = path, sess

        def call():
            return sess.run(None, feed)[0]
        self.ort = call

    def ort_node_times(self, workdir: str, runs: int = 20) -> Dict[str, Any]:
        """ORT's profiler on the one-node model: medians over ``runs`` of the per-run summed kernel
        times of the layer's own nodes (``kernel_us``: Conv / Gemm, the fused activation, Mul,
        Add) and of the NCHWc ``ReorderInput``/``ReorderOutput`` nodes ORT puts around a lone conv
        (``reorder_us``: in a whole model they are paid once per run of NCHWc nodes, not per layer)."""
        import statistics

        from .ort import profile_runs

        per_run = profile_runs(self.onnx_path, dict(self.ort_inputs), self.threads, runs, workdir, warmup=3)
        kernel = [sum(t for _, op, t in run if not op.startswith("Reorder")) for run in per_run]
        reorder = [sum(t for _, op, t in run if op.startswith("Reorder")) for run in per_run]
        return {"kernel_us": statistics.median(kernel) if kernel else None,
                "reorder_us": statistics.median(reorder) if reorder else None,
                "ops": sorted({op for run in per_run[:1] for _, op, _ in run})}

    def errors(self) -> Dict[str, float]:
        """Ours against ORT and against the torch module, both on the same inputs:
        max |diff| and that over max |reference|."""
        with torch.inference_mode():
            ours = self.ours().float()
            ref = self.module(*(torch.from_numpy(v) for v in self.ort_inputs.values())).float()
        scale = float(ref.abs().max()) or 1.0
        out = {"max_abs_err_torch": float((ours - ref).abs().max())}
        out["max_rel_err_torch"] = out["max_abs_err_torch"] / scale
        if self.ort is not None:
            o = torch.from_numpy(self.ort()).float()
            out["max_abs_err"] = float((ours - o).abs().max())
            out["max_rel_err"] = out["max_abs_err"] / scale
        return out


def _weights(g: torch.Generator, cout: int, k: int, shape):
    w = torch.randn(*shape, generator=g) / k ** 0.5
    b = torch.rand(cout, generator=g) * 0.5 - 0.25
    return w, b


def gemm_case(layer: Layer, threads: int = 1, batch: int = 1, seed: int = 0) -> GemmCase:
    """Inputs, packed weights, our call and the one-node torch module of ``layer``."""
    import zlib

    g = torch.Generator().manual_seed(seed + zlib.crc32(layer.name.encode()))
    cl = torch.channels_last
    pack = torch.ops.mnv3ext.pack_gemm_weight
    inputs: Dict[str, torch.Tensor] = {}
    if isinstance(layer, shapes.PwLayer):
        cin, cout, s = layer.in_channels, layer.out_channels, layer.size
        w, b = _weights(g, cout, cin, (cout, cin, 1, 1))
        conv = nn.Conv2d(cin, cout, 1, bias=True)
        x = torch.randn(batch, cin, s, s, generator=g)
        inputs["input"] = x
        scale = residual = None
        if layer.input_scale:
            scale = torch.rand(batch, cin, generator=g)  # a hardsigmoid gate is in [0, 1]
            inputs["scale"] = scale[:, :, None, None]
        if layer.residual:
            residual = torch.randn(batch, cout, s, s, generator=g)
            inputs["residual"] = residual
        module = _PwModule(conv, layer.activation, scale is not None, residual is not None)
        packed = pack(w, b)
        x_cl = x.contiguous(memory_format=cl)
        r_cl = None if residual is None else residual.contiguous(memory_format=cl)
        entry, act = ops.pointwise_conv2d_packed, layer.activation

        def ours():
            return entry(x_cl, packed, cout, act, r_cl, scale)
    elif isinstance(layer, shapes.StemLayer):
        cin, cout, k, st, p = layer.in_channels, layer.out_channels, layer.kernel, layer.stride, layer.padding
        w, b = _weights(g, cout, cin * k * k, (cout, cin, k, k))
        conv = nn.Conv2d(cin, cout, k, st, p, bias=True)
        x = torch.randn(batch, cin, layer.size, layer.size, generator=g)
        inputs["input"] = x
        module = _Seq(conv, layer.activation)
        packed = pack(w.permute(0, 2, 3, 1), b)  # conv2d_packed's taps in NHWC order, as FusedConv2d packs
        x_cl = x.contiguous(memory_format=cl)
        params = ops.dwconv_params([k, k], [st, st], [p, p], [1, 1])
        entry, act = ops.conv2d_packed, layer.activation

        def ours():
            return entry(x_cl, packed, cout, params, act)
    elif isinstance(layer, shapes.FcLayer):
        cin, cout = layer.in_features, layer.out_features
        w, b = _weights(g, cout, cin, (cout, cin))
        conv = nn.Linear(cin, cout, bias=True)
        x = torch.randn(batch, cin, generator=g)
        inputs["input"] = x
        module = _Seq(conv, layer.activation)
        packed = pack(w, b)
        entry, act = ops.linear_packed, layer.activation

        def ours():
            return entry(x, packed, cout, act)
    else:
        raise TypeError(f"layer: not a GEMM-family layer: {layer!r}")
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
    module.eval()
    ort_inputs = {name: t.contiguous().numpy() for name, t in inputs.items()}
    return GemmCase(layer, threads, ours, module, ort_inputs, batch * layer.macs)


def gemm_cases(models: Sequence[str] = ("large", "small"), match: Optional[str] = None, threads: int = 1,
               batch: int = 1) -> List[GemmCase]:
    """Cases in model order (stem, 1x1 convs, classifier) for ``models``; ``match``: substring."""
    return [gemm_case(layer, threads, batch) for layer in shapes.ALL_GEMM
            if layer.model in models and (not match or match in layer.name)]
