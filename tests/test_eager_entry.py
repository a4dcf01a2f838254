"""mnv3ext.ops.dwconv2d / dwconv2d_packed / squeeze_excite: the eager entry points the fused modules
call. In plain eager mode they skip the dispatcher; whenever anything may observe or reroute the
call they must go through torch.ops.mnv3ext.*, and in every case give the op's exact result."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mnv3ext import ops, reference
from mnv3ext.nn import FusedDepthwiseConv2d, FusedSqueezeExcite


def dw_packed_args(channels=24, size=(9, 11), channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, *size, generator=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w, b = torch.randn(channels, 1, 3, 3, generator=g), torch.randn(channels, generator=g)
    packed = torch.ops.mnv3ext.pack_dwconv_weight(w, b)
    return (x, packed, ops.dwconv_params([3, 3], [2, 1], [1, 0, 2, 1], [1, 1]), "hardswish"), (w, b)


def se_args(channels=24, channels_last=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, 7, 5, generator=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return (x, torch.randn(8, channels, 1, 1, generator=g), torch.randn(8, generator=g),
            torch.randn(channels, 8, 1, 1, generator=g), None, "hardswish", "hardsigmoid")


class OpCounter:
    """Counts calls that reach the torch.ops overloads from the entry points."""

    def __init__(self, monkeypatch):
        self.calls = 0
        for name in ("_DWCONV2D_OP", "_DWCONV2D_PACKED_OP", "_SQUEEZE_EXCITE_OP", "_SQUEEZE_EXCITE_PACKED_OP"):
            original = getattr(ops, name)
            monkeypatch.setattr(ops, name, self._counting(original))

    def _counting(self, fn):
        def call(*args):
            self.calls += 1
            return fn(*args)
        return call


class OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("channels", [1, 16, 17, 40])
def test_entry_points_equal_the_ops_bit_for_bit(channels, channels_last):
    args, (w, b) = dw_packed_args(channels, channels_last=channels_last)
    with torch.inference_mode():
        direct = ops.dwconv2d_packed(*args)
        torch.testing.assert_close(direct, torch.ops.mnv3ext.dwconv2d_packed(*args), rtol=0, atol=0)
        assert direct.is_contiguous(memory_format=torch.channels_last if channels_last
                                    else torch.contiguous_format)
        unpacked = (args[0], w, b, [2, 1], [1, 0, 2, 1], [1, 1], "hardswish")
        torch.testing.assert_close(ops.dwconv2d(*unpacked), torch.ops.mnv3ext.dwconv2d(*unpacked),
                                   rtol=0, atol=0)
        torch.testing.assert_close(direct.double(), reference.dwconv2d(
            *(t.double() if isinstance(t, torch.Tensor) else t for t in unpacked)), rtol=1e-5, atol=1e-5)
        se = se_args(channels, channels_last)
        torch.testing.assert_close(ops.squeeze_excite(*se), torch.ops.mnv3ext.squeeze_excite(*se),
                                   rtol=0, atol=0)


def test_plain_eager_skips_the_dispatcher(monkeypatch):
    counter = OpCounter(monkeypatch)
    args, (w, b) = dw_packed_args()
    for _ in range(2):  # the first call of a signature and a cached one
        ops.dwconv2d_packed(*args)
        ops.dwconv2d(args[0], w, b, [1, 1], [1, 1], [1, 1], "relu")
        se = se_args()
        ops.squeeze_excite(*se)
        ops.squeeze_excite_packed(se[0], torch.ops.mnv3ext.pack_se_weights(*se[1:5]), 8, "relu", "sigmoid")
    assert counter.calls == 0


def test_dispatch_mode_sees_the_op(monkeypatch):
    args, _ = dw_packed_args()
    se = se_args()
    packed = torch.ops.mnv3ext.pack_se_weights(*se[1:5])
    with OpLog() as log:
        ops.dwconv2d_packed(*args)
        ops.squeeze_excite(*se)
        ops.squeeze_excite_packed(se[0], packed, 8, "relu", "sigmoid")
    assert "mnv3ext.dwconv2d_packed.default" in log.names
    assert "mnv3ext.squeeze_excite.default" in log.names
    assert "mnv3ext.squeeze_excite_packed.default" in log.names


def test_function_mode_device_context_goes_through_the_op(monkeypatch):
    counter = OpCounter(monkeypatch)
    args, _ = dw_packed_args()
    with torch.device("cpu"):
        out = ops.dwconv2d_packed(*args)
    assert counter.calls == 1
    torch.testing.assert_close(out, torch.ops.mnv3ext.dwconv2d_packed(*args), rtol=0, atol=0)


def test_fake_and_meta_tensors_get_the_fake_kernel():
    from torch._subclasses.fake_tensor import FakeTensorMode

    args, _ = dw_packed_args()
    expected = torch.ops.mnv3ext.dwconv2d_packed(*args)
    with FakeTensorMode() as mode:
        fake = ops.dwconv2d_packed(mode.from_tensor(args[0]), mode.from_tensor(args[1]), *args[2:])
    assert fake.shape == expected.shape and fake.stride() == expected.stride()
    meta = ops.dwconv2d_packed(args[0].to("meta"), args[1].to("meta"), *args[2:])
    assert meta.device.type == "meta" and meta.shape == expected.shape
    se = se_args()
    meta_se = ops.squeeze_excite(*(t.to("meta") if isinstance(t, torch.Tensor) else t for t in se))
    assert meta_se.device.type == "meta" and meta_se.shape == se[0].shape
    packed = torch.ops.mnv3ext.pack_se_weights(*se[1:5])
    meta_packed = ops.squeeze_excite_packed(se[0].to("meta"), packed.to("meta"), 8, "relu", "sigmoid")
    assert meta_packed.device.type == "meta" and meta_packed.shape == se[0].shape


def test_profiler_sees_the_op():
    args, _ = dw_packed_args()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        ops.dwconv2d_packed(*args)
    assert any(e.name == "mnv3ext::dwconv2d_packed" for e in prof.events())


def test_jit_trace_records_the_ops():
    module = torch.nn.Sequential(
        FusedDepthwiseConv2d(torch.randn(16, 1, 3, 3), torch.randn(16), 1, 1, 1, "hardswish"),
        FusedSqueezeExcite(torch.randn(4, 16, 1, 1), torch.randn(4), torch.randn(16, 4, 1, 1), None),
    ).eval()
    x = torch.randn(1, 16, 10, 10)
    traced = torch.jit.trace(module, x)
    graph = str(traced.inlined_graph)
    assert "mnv3ext::dwconv2d_packed" in graph and "mnv3ext::squeeze_excite_packed" in graph
    y = torch.randn(1, 16, 10, 10)
    torch.testing.assert_close(traced(y), module(y), rtol=0, atol=0)


def test_torch_compile_fullgraph_of_fused_modules():
    torch._dynamo.reset()
    module = torch.nn.Sequential(
        FusedDepthwiseConv2d(torch.randn(16, 1, 5, 5), torch.randn(16), 2, 2, 1, "relu"),
        FusedSqueezeExcite(torch.randn(4, 16, 1, 1), torch.randn(4), torch.randn(16, 4, 1, 1), None),
    ).eval()
    compiled = torch.compile(module, fullgraph=True, backend="inductor")
    x = torch.randn(2, 16, 13, 13)
    torch.testing.assert_close(compiled(x), module(x), rtol=1e-6, atol=1e-6)


def test_negative_bit_view_is_resolved():
    args, _ = dw_packed_args()
    neg = torch._neg_view(args[0])
    torch.testing.assert_close(ops.dwconv2d_packed(neg, *args[1:]),
                               ops.dwconv2d_packed(-args[0], *args[1:]), rtol=0, atol=0)
    se = se_args()
    torch.testing.assert_close(ops.squeeze_excite(torch._neg_view(se[0]), *se[1:]),
                               ops.squeeze_excite(-se[0], *se[1:]), rtol=0, atol=0)


def test_tensor_subclass_goes_through_the_op(monkeypatch):
    class Tagged(torch.Tensor):
        pass

    counter = OpCounter(monkeypatch)
    args, _ = dw_packed_args()
    out = ops.dwconv2d_packed(args[0].as_subclass(Tagged), *args[1:])
    assert counter.calls == 1
    torch.testing.assert_close(torch.Tensor(out) if type(out) is not torch.Tensor else out,
                               torch.ops.mnv3ext.dwconv2d_packed(*args), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:.*batching rule")
def test_vmap_goes_through_the_op_and_matches_a_loop():
    args, _ = dw_packed_args()
    batch = torch.stack([args[0], args[0] + 1])
    out = torch.func.vmap(lambda x: ops.dwconv2d_packed(x, *args[1:]))(batch)
    expected = torch.stack([torch.ops.mnv3ext.dwconv2d_packed(x, *args[1:]) for x in batch])
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def _bad_dw(args):
    x, packed, params, act = args
    return {
        "float64 input": (x.double(), packed, params, act),
        "wrong packed shape": (x, packed[:, :8], params, act),
        "bad activation": (x, packed, params, "gelu"),
        "short conv_params": (x, packed, params[:9], act),
        "3-d input": (x[0], packed, params, act),
        "grad input": (x.clone().requires_grad_(), packed, params, act),
    }


@pytest.mark.parametrize("case", list(_bad_dw(dw_packed_args()[0])))
def test_bad_input_raises_as_the_op_does(case):
    bad = _bad_dw(dw_packed_args()[0])[case]
    with pytest.raises(Exception) as via_op:
        torch.ops.mnv3ext.dwconv2d_packed(*bad)
    with pytest.raises(type(via_op.value)) as direct:
        ops.dwconv2d_packed(*bad)
    assert str(via_op.value).splitlines()[0] in str(direct.value)
    assert not bad[0].requires_grad or bad[0].grad is None


@pytest.mark.parametrize("entry", ["mnv3ext.ops", "torch.ops"])
@pytest.mark.parametrize("layout", ["sparse", "mkldnn"])
def test_non_dense_tensors_are_refused_naming_the_argument(entry, layout):
    # Through torch.ops these reach no CPU kernel (another dispatch key): the op still names them.
    if layout == "mkldnn" and not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no MKL-DNN")
    convert = {"sparse": torch.Tensor.to_sparse, "mkldnn": torch.Tensor.to_mkldnn}[layout]
    namespace = ops if entry == "mnv3ext.ops" else torch.ops.mnv3ext
    args, _ = dw_packed_args()
    with pytest.raises(ValueError, match="input: expected a dense"):
        namespace.dwconv2d_packed(convert(args[0]), *args[1:])
    with pytest.raises(ValueError, match="packed_weight: expected a dense"):
        namespace.dwconv2d_packed(args[0], convert(args[1]), *args[2:])
    se = se_args()
    with pytest.raises(ValueError, match="fc1_weight: expected a dense"):
        namespace.squeeze_excite(se[0], convert(se[1]), *se[2:])
    with pytest.raises(ValueError, match="weight: expected a dense"):
        torch.ops.mnv3ext.pack_dwconv_weight(convert(torch.randn(8, 1, 3, 3)), None)
