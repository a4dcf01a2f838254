"""``FusedSequence``: consecutive layers of an optimized model (stem, blocks, 1x1 convolutions,
pool, classifier) run as one ``torch.ops.mnv3ext.sequential`` call.

The layers stay where they are in the model (their buffers, ``state_dict`` keys and packed
weights unchanged). This module keeps plain references to them (not submodules: nothing is
registered or saved twice) and reads their packed weights on every call, so a
``load_state_dict`` that re-packs them is seen at once; ``copy.deepcopy`` and pickling keep the
references pointing into the copied model.
"""
from __future__ import annotations

import operator
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules import module as _nn_module

from .. import ops
from .. import _sequence_ops
from .._sequence_ops import plan_for, run_checked
from .._program import FLATTEN, STEP_NAMES, parse_program

__all__ = ["FusedSequence", "no_module_hooks"]

_is = operator.is_
_getitem = dict.__getitem__
_data_ptr = torch.Tensor.data_ptr
_requires_grad = torch.Tensor.requires_grad.__get__
_grad_enabled = torch.is_grad_enabled
_num_threads = torch.get_num_threads
_Tensor = torch.Tensor


def no_module_hooks(m: nn.Module) -> bool:
    """True when calling ``m`` is exactly ``m.forward(...)``: what ``nn.Module.__call__`` checks
    before it skips its hook machinery, plus ``Module.compile`` and a per-instance ``forward``."""
    return not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                or _nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks
                or _nn_module._global_backward_hooks or _nn_module._global_backward_pre_hooks
                or m._compiled_call_impl is not None or "forward" in m.__dict__)


class _Validated(NamedTuple):
    """The last call's validated plan, reused while input layout, program and weight tensors are
    the same. ``plain``: the call takes the op's plain route (float32, no input conversion or
    weight copies, an NHWC result, a non-empty batch), which ``__call__`` runs itself."""
    shape: torch.Size
    stride: Tuple[int, ...]
    dtype: torch.dtype
    weights: List[torch.Tensor]  # held, so their identity cannot be reused
    program: List[int]
    entry: Any  # plan_for's entry
    buffers: List[Dict[str, torch.Tensor]]  # the source modules' buffer dicts (torch never replaces one)
    names: List[str]
    plain: bool


@torch.jit.unused
def _sequential(x: torch.Tensor, weights: List[torch.Tensor], program: List[int]) -> torch.Tensor:
    return ops.sequential(x, weights, program)


class FusedSequence(nn.Module):
    """``forward(x, weights=None)``: the steps of ``program`` on ``x``. ``layers``: the names of
    the modules the steps stand for (printing, the optimize summary, ``mnv3ext.check``);
    ``sources``: (module, packed-weight buffer name) per step that takes a weight, read when
    ``weights`` is not given."""

    __jit_ignored_attributes__ = ["_sources", "_validated"]

    def __init__(self, program: List[int], layers: List[str],
                 sources: Sequence[Tuple[nn.Module, str]] = ()):
        super().__init__()
        parse_program(program)
        self.program: List[int] = [int(v) for v in program]
        self.layers: List[str] = list(layers)
        self._sources = [(m, str(name)) for m, name in sources]
        self._validated = None  # _Validated: the last call's plan

    def __getstate__(self):  # deepcopy / pickle: the validated plan is rebuilt on first use
        state = self.__dict__.copy()
        state["_validated"] = None
        return state

    def __call__(self, *args, **kwargs):
        # The whole model's one Python call per inference, right after kernels that evicted the
        # interpreter's data from the caches: every Python frame and object touched costs
        # (~10-15 us a frame). In plain eager mode, with no hooks, this is Module.__call__ ->
        # forward -> the op in one frame, on the last call's validated plan.
        v = self._validated
        if (v is not None and v.plain and len(args) == 1 and not kwargs and not self.training
                and ops._unobserved() and no_module_hooks(self)):
            x = args[0]
            if (type(x) is _Tensor and x.is_cpu and not x.is_neg() and x.shape == v.shape
                    and x.stride() == v.stride and x.dtype is v.dtype and v.program == self.program
                    and _sequence_ops._recording is None):
                weights = list(map(_getitem, v.buffers, v.names))
                if all(map(_is, weights, v.weights)) and not (
                        _grad_enabled() and (x.requires_grad or any(map(_requires_grad, weights)))):
                    plan, size, dense = v.entry[:3]
                    out = x.new_empty_strided(size, dense)
                    plan.run(x.data_ptr(), list(map(_data_ptr, weights)), out.data_ptr(), _num_threads(), 0)
                    return out
        return super().__call__(*args, **kwargs)

    @torch.jit.unused
    def layer_steps(self) -> Dict[int, str]:
        """{program step index: the layer it stands for}, for the steps that run one (a flatten
        does not); the indices are those of ``recording_step_times``' records."""
        layers = iter(self.layers)
        return {j: next(layers) for j, (kind, _) in enumerate(parse_program(self.program)) if kind != FLATTEN}

    @torch.jit.unused
    def _weights(self) -> List[torch.Tensor]:
        return [m._buffers[name] for m, name in self._sources]

    @torch.jit.unused
    def _run_own_weights(self, x: torch.Tensor) -> torch.Tensor:
        # The whole model's one Python call per inference, right after kernels that evicted the
        # interpreter's data from the caches: every object touched costs. The plan validated for
        # these very weight tensors (held, so their identity cannot be reused), this input
        # layout and this program is reused without building the op's cache key.
        weights = self._weights()
        if not (ops._unobserved() and ops._plain(x)):
            return ops.sequential(x, weights, self.program)
        v = self._validated
        if (v is None or (v.shape, v.stride, v.dtype) != (x.shape, x.stride(), x.dtype) or v.program != self.program
                or not all(map(operator.is_, weights, v.weights))):
            v = self._validate(x, weights)
        return run_checked(v.entry, x, weights)

    @torch.jit.unused
    def _validate(self, x: torch.Tensor, weights: List[torch.Tensor]) -> _Validated:
        entry = plan_for(x, weights, self.program)
        _, size, dense, strides, convert, copy_weights, _ = entry
        plain = (x.dtype == torch.float32 and not copy_weights and strides == dense and bool(size[0])
                 and (convert is None or x.is_contiguous(memory_format=convert)))
        self._validated = v = _Validated(x.shape, x.stride(), x.dtype, weights, list(self.program), entry,
                                         [m._buffers for m, _ in self._sources],
                                         [name for _, name in self._sources], plain)
        return v

    def forward(self, x: torch.Tensor, weights: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        if self.training:
            raise RuntimeError("FusedSequence is inference-only: call model.eval() first")
        if torch.jit.is_scripting():
            if weights is None:
                raise RuntimeError("FusedSequence under TorchScript needs its weights passed in")
            return torch.ops.mnv3ext.sequential(x, weights, self.program)
        if weights is None:
            return self._run_own_weights(x)
        return _sequential(x, weights, self.program)

    def extra_repr(self) -> str:
        kinds = [STEP_NAMES[k] for k, _ in parse_program(self.program)]
        counts = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
        return (f"{len(self.layers)} layers ({self.layers[0]} .. {self.layers[-1]}): "
                + ", ".join(f"{n} {k}" for k, n in counts.items()))
