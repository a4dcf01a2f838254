"""The GEMM family's bad input: each op raises TypeError / ValueError whose message names the
argument (wrong dtype, device, dims, channel counts, packed length, activation, out_channels,
conv_params), never crashes, modifies nothing; the fake (meta) kernels and the eager entry points
in mnv3ext.ops raise the same."""
import pytest
import torch

import mnv3ext._C as C
from mnv3ext import ops

OPS = torch.ops.mnv3ext
BAD_DTYPES = [torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8, torch.bool]
PARAMS3 = [3, 3, 1, 1, 1, 1, 1, 1, 1, 1]


def good(op):
    """Valid keyword arguments of each op (names as in its schema)."""
    x = torch.randn(2, 8, 5, 6)
    if op == "pack_gemm_weight":
        return dict(weight=torch.randn(16, 8, 1, 1), bias=torch.randn(16))
    if op == "pointwise_conv2d":
        return dict(input=x, weight=torch.randn(16, 8, 1, 1), bias=torch.randn(16), activation="relu",
                    residual=torch.randn(2, 16, 5, 6), input_scale=torch.rand(2, 8))
    if op == "pointwise_conv2d_packed":
        return dict(input=x, packed_weight=OPS.pack_gemm_weight(torch.randn(16, 8), None), out_channels=16,
                    activation="hardswish", residual=torch.randn(2, 16, 5, 6), input_scale=torch.rand(2, 8))
    if op == "conv2d_packed":
        return dict(input=x, packed_weight=OPS.pack_gemm_weight(torch.randn(16, 8, 3, 3), None), out_channels=16,
                    conv_params=list(PARAMS3), activation="relu6")
    if op == "linear_packed":
        return dict(input=torch.randn(3, 8), packed_weight=OPS.pack_gemm_weight(torch.randn(10, 8), None),
                    out_features=10, activation="none")
    if op == "global_avg_pool":
        return dict(input=x)
    if op == "se_gate_packed":
        return dict(input=x, packed_weights=OPS.pack_se_weights(torch.randn(4, 8), None, torch.randn(8, 4), None),
                    squeeze=4, activation="relu", gate="sigmoid")
    raise AssertionError(op)


ALL_OPS = ["pack_gemm_weight", "pointwise_conv2d", "pointwise_conv2d_packed", "conv2d_packed", "linear_packed",
           "global_avg_pool", "se_gate_packed"]
ENTRY_POINTS = ALL_OPS[1:]  # mnv3ext.ops has an eager entry point for each but the packing op


def call(op, entry="torch.ops", **changes):
    a = {**good(op), **changes}
    fn = getattr(OPS, op) if entry == "torch.ops" else getattr(ops, op)
    return fn(*a.values())


def raises_naming(op, message, exc=(TypeError, ValueError), entries=None, **changes):
    """Every entry point raises `exc` matching `message`, and modifies none of the tensors."""
    for entry in entries or (["torch.ops", "mnv3ext.ops"] if op in ENTRY_POINTS else ["torch.ops"]):
        a = {**good(op), **changes}
        before = {k: v.clone() for k, v in a.items() if isinstance(v, torch.Tensor) and v.device.type == "cpu"
                  and v.layout == torch.strided}
        with pytest.raises(exc, match=message):
            call(op, entry, **changes)
        for k, v in before.items():
            assert torch.equal(a[k], v), f"{entry} {op} modified {k}"


TENSOR_ARGS = [(op, name) for op in ALL_OPS for name, v in good(op).items() if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=str)
@pytest.mark.parametrize("op,arg", TENSOR_ARGS, ids=lambda v: v if isinstance(v, str) else None)
def test_wrong_dtype_is_named(op, arg, dtype):
    raises_naming(op, f"{arg}: expected dtype float32", TypeError, **{arg: good(op)[arg].to(dtype)})


@pytest.mark.parametrize("op,arg", [(op, a) for op, a in TENSOR_ARGS if a not in ("input", "weight")
                                    or (op, a) == ("pointwise_conv2d", "weight")], ids=str)
def test_tensor_on_another_device_than_the_input_is_named(op, arg):
    raises_naming(op, f"{arg}: expected device", ValueError, **{arg: good(op)[arg].to("meta")})


@pytest.mark.parametrize("op", ENTRY_POINTS)
def test_meta_input_with_cpu_weights_is_refused(op):
    a = good(op)
    if len([v for v in a.values() if isinstance(v, torch.Tensor)]) == 1:
        pytest.skip("one tensor argument: meta in, meta out")
    second = [k for k, v in a.items() if isinstance(v, torch.Tensor) and k != "input"][0]
    raises_naming(op, f"{second}: expected device meta", ValueError, input=a["input"].to("meta"))


@pytest.mark.parametrize("op,arg", TENSOR_ARGS, ids=str)
def test_none_or_non_tensor_for_a_tensor_is_named(op, arg):
    optional = {"bias", "residual", "input_scale"}
    if arg in optional:  # None is valid: a list instead, refused by the schema naming the argument
        raises_naming(op, f"argument '{arg}'", (TypeError, RuntimeError), **{arg: [1.0, 2.0]})
        return
    raises_naming(op, f"{arg}: expected a Tensor", TypeError, **{arg: None})


@pytest.mark.parametrize("op,arg", TENSOR_ARGS, ids=str)
def test_sparse_and_quantized_tensors_are_named(op, arg):
    t = good(op)[arg]
    raises_naming(op, f"{arg}: expected a dense", ValueError, **{arg: t.to_sparse()})
    q = torch.quantize_per_tensor(t, 0.1, 0, torch.quint8)
    raises_naming(op, f"{arg}: expected dtype float32", TypeError, **{arg: q})


@pytest.mark.parametrize("op,changes,message", [
    # dims
    ("pack_gemm_weight", dict(weight=torch.randn(16)), "weight: expected 2 or 3 or 4 dimensions"),
    ("pack_gemm_weight", dict(weight=torch.randn(1, 2, 3, 4, 5)), "weight: expected 2 or 3 or 4 dimensions"),
    ("pack_gemm_weight", dict(weight=torch.randn(0, 8)), "weight: expected non-empty"),
    ("pack_gemm_weight", dict(weight=torch.randn(16, 0, 1, 1)), "weight: expected non-empty"),
    ("pack_gemm_weight", dict(bias=torch.randn(15)), "bias: expected shape"),
    ("pack_gemm_weight", dict(bias=torch.randn(16, 1)), "bias: expected 1 dimensions"),
    ("pointwise_conv2d", dict(input=torch.randn(8, 5, 6)), "input: expected 4 dimensions"),
    ("pointwise_conv2d", dict(input=torch.randn(2, 8, 0, 6)), "input: C, H and W must be >= 1"),
    ("pointwise_conv2d", dict(weight=torch.randn(16, 8, 1)), "weight: expected 2 or 4 dimensions"),
    ("pointwise_conv2d", dict(weight=torch.randn(16, 8, 3, 3)), "weight: expected shape"),
    ("pointwise_conv2d", dict(weight=torch.randn(16, 7, 1, 1)), "weight: expected shape"),
    ("pointwise_conv2d", dict(weight=torch.randn(16, 9)), "weight: expected shape"),
    ("pointwise_conv2d", dict(weight=torch.randn(0, 8), bias=None, residual=None), "weight: expected shape"),
    ("pointwise_conv2d", dict(bias=torch.randn(17)), "bias: expected shape"),
    ("pointwise_conv2d", dict(bias=torch.randn(16, 1)), "bias: expected 1 dimensions"),
    ("pointwise_conv2d", dict(residual=torch.randn(2, 15, 5, 6)), "residual: expected shape"),
    ("pointwise_conv2d", dict(residual=torch.randn(2, 16, 5, 5)), "residual: expected shape"),
    ("pointwise_conv2d", dict(residual=torch.randn(1, 16, 5, 6)), "residual: expected shape"),
    ("pointwise_conv2d", dict(residual=torch.randn(16, 5, 6)), "residual: expected 4 dimensions"),
    ("pointwise_conv2d", dict(input_scale=torch.rand(2, 7)), "input_scale: expected shape"),
    ("pointwise_conv2d", dict(input_scale=torch.rand(1, 8)), "input_scale: expected shape"),
    ("pointwise_conv2d", dict(input_scale=torch.rand(2, 8, 1, 1)), "input_scale: expected 2 dimensions"),
    ("pointwise_conv2d", dict(input_scale=torch.rand(16)), "input_scale: expected 2 dimensions"),
    ("pointwise_conv2d_packed", dict(packed_weight=torch.randn(16 * 9 - 1)), "packed_weight: expected 144 floats"),
    ("pointwise_conv2d_packed", dict(packed_weight=torch.randn(16 * 9 + 16)), "packed_weight: expected 144 floats"),
    ("pointwise_conv2d_packed", dict(packed_weight=torch.randn(16, 9)), "packed_weight: expected 1 dimensions"),
    ("pointwise_conv2d_packed", dict(out_channels=17), "packed_weight: expected 288 floats"),
    ("pointwise_conv2d_packed", dict(input=torch.randn(2, 9, 5, 6), input_scale=None), "packed_weight: expected"),
    ("pointwise_conv2d_packed", dict(out_channels=0), "out_channels: expected an int >= 1"),
    ("pointwise_conv2d_packed", dict(out_channels=-16), "out_channels: expected an int >= 1"),
    ("pointwise_conv2d_packed", dict(residual=torch.randn(2, 17, 5, 6)), "residual: expected shape"),
    ("pointwise_conv2d_packed", dict(input_scale=torch.rand(2, 16)), "input_scale: expected shape"),
    ("conv2d_packed", dict(packed_weight=OPS.pack_gemm_weight(torch.randn(16, 8, 3, 2), None)),
     "packed_weight: expected"),
    ("conv2d_packed", dict(out_channels=17), "packed_weight: expected"),  # 8 would fit the same panel
    ("conv2d_packed", dict(out_channels=0), "out_channels: expected an int >= 1"),
    ("conv2d_packed", dict(conv_params=[3, 3, 1, 1, 1, 1, 1, 1, 1]), "conv_params: expected 10 values"),
    ("conv2d_packed", dict(conv_params=[8, 8, 1, 1, 1, 1, 1, 1, 1, 1]), "conv_params: kernel size"),
    ("conv2d_packed", dict(conv_params=[0, 3, 1, 1, 1, 1, 1, 1, 1, 1]), "conv_params: kernel_size"),
    ("conv2d_packed", dict(conv_params=[3, 3, 0, 1, 1, 1, 1, 1, 1, 1]), "conv_params: stride"),
    ("conv2d_packed", dict(conv_params=[3, 3, 1, 1, -1, 1, 1, 1, 1, 1]), "conv_params: padding"),
    ("conv2d_packed", dict(conv_params=[3, 3, 1, 1, 1, 1, 1, 1, 0, 1]), "conv_params: dilation"),
    ("conv2d_packed", dict(conv_params=[3, 3, 2**31, 1, 1, 1, 1, 1, 1, 1]), "conv_params: stride"),
    ("conv2d_packed", dict(conv_params=[3, 3, 1, 1, 0, 0, 0, 0, 4, 4]), "padding: padded input"),
    ("conv2d_packed", dict(input=torch.randn(2, 8, 5)), "input: expected 4 dimensions"),
    ("linear_packed", dict(input=torch.tensor(1.0)), "input: expected 1 or 2 or 3"),
    ("linear_packed", dict(input=torch.randn(3, 0)), "input: the last dimension"),
    ("linear_packed", dict(input=torch.randn(3, 9)), "packed_weight: expected"),
    ("linear_packed", dict(out_features=17), "packed_weight: expected"),
    ("linear_packed", dict(out_features=0), "out_features: expected an int >= 1"),
    ("global_avg_pool", dict(input=torch.randn(8, 5, 6)), "input: expected 4 dimensions"),
    ("global_avg_pool", dict(input=torch.randn(2, 0, 5, 6)), "input: C, H and W must be >= 1"),
    ("global_avg_pool", dict(input=torch.randn(2, 8, 5, 0)), "input: C, H and W must be >= 1"),
    ("se_gate_packed", dict(squeeze=5), "packed_weights: expected"),
    ("se_gate_packed", dict(squeeze=0), "squeeze: expected an int >= 1"),
    ("se_gate_packed", dict(input=torch.randn(2, 9, 5, 6)), "packed_weights: expected"),
    ("se_gate_packed", dict(gate="relu"), "gate: expected one of"),
    ("se_gate_packed", dict(activation="sigmoid"), "activation: expected one of"),
])
def test_bad_arguments_are_named(op, changes, message):
    raises_naming(op, message, **changes)
    # The fake kernel (meta tensors) says the same.
    meta = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in {**good(op), **changes}.items()}
    with pytest.raises((TypeError, ValueError), match=message):
        getattr(OPS, op)(*meta.values())


@pytest.mark.parametrize("op", ["pointwise_conv2d", "pointwise_conv2d_packed", "conv2d_packed", "linear_packed",
                                "se_gate_packed"])
@pytest.mark.parametrize("activation", ["gelu", "Relu", "", "relu ", "hardsigmoid", "sigmoid", "relu\x00"])
def test_unknown_activation_is_named(op, activation):
    raises_naming(op, "activation: expected one of", activation=activation)


@pytest.mark.parametrize("op,arg", [("pointwise_conv2d_packed", "out_channels"), ("conv2d_packed", "out_channels"),
                                    ("linear_packed", "out_features")])
@pytest.mark.parametrize("value", [16.0, "16", None, [16]], ids=repr)  # torch.ops takes a bool as an int
def test_non_int_out_channels_is_named(op, arg, value):
    if op == "linear_packed" and not isinstance(value, bool) and value == 16.0:
        value = 10.0
    # The eager entry point checks the type itself; torch.ops checks it against the schema.
    with pytest.raises(TypeError, match=f"{arg}: expected an int"):
        call(op, "mnv3ext.ops", **{arg: value})
    with pytest.raises((TypeError, RuntimeError), match=arg):
        call(op, **{arg: value})


@pytest.mark.parametrize("op", ENTRY_POINTS)
def test_requires_grad_is_refused_by_op_and_entry_point(op):
    a = good(op)
    raises_naming(op, "inference-only", RuntimeError, input=a["input"].clone().requires_grad_(True))


def test_the_packing_op_refuses_non_cpu_weights_naming_them():
    with pytest.raises(ValueError, match="bias: expected device"):
        OPS.pack_gemm_weight(torch.randn(16, 8), torch.randn(16).to("meta"))
    meta = OPS.pack_gemm_weight(torch.randn(16, 8, device="meta"), None)
    assert meta.device.type == "meta" and meta.shape == (ops.packed_gemm_numel(8, 16),)


@pytest.mark.parametrize("op", ENTRY_POINTS)
def test_entry_points_raise_exactly_as_the_ops(op):
    """Many bad calls at once: same exception type and first message line on both paths."""
    a = good(op)
    variants = [{"input": a["input"].double()}, {"input": a["input"].reshape(-1)[:0]}]
    if "activation" in a:
        variants.append({"activation": "swish"})
    for name, v in a.items():
        if isinstance(v, torch.Tensor) and name != "input":
            variants += [{name: v.double()}, {name: v.reshape(-1)[:3]}, {name: v.to("meta")}]
        if isinstance(v, int) and not isinstance(v, bool):
            variants += [{name: v + 16}, {name: -1}]  # + 16: one more 16-column panel
    for changes in variants:
        with pytest.raises(Exception) as via_op:
            call(op, **changes)
        with pytest.raises(type(via_op.value)) as direct:
            call(op, "mnv3ext.ops", **changes)
        assert str(via_op.value).splitlines()[0] in str(direct.value), (changes, str(via_op.value), str(direct.value))


def test_a_cached_plan_does_not_accept_a_different_bad_call():
    """The CPU kernels cache validated plans by shape, strides and dtype: a call differing only in
    what the key leaves out (the device, requires_grad) must still be refused."""
    a = good("pointwise_conv2d_packed")
    OPS.pointwise_conv2d_packed(*a.values())  # fills the cache
    bad = dict(a, input=a["input"].to("meta"))
    with pytest.raises(ValueError, match="packed_weight: expected device meta"):
        OPS.pointwise_conv2d_packed(*bad.values())
    with pytest.raises(RuntimeError, match="inference-only"):
        OPS.pointwise_conv2d_packed(*dict(a, residual=a["residual"].clone().requires_grad_(True)).values())


def test_sizes_overflowing_64bit_indexing_are_refused_before_any_access():
    with pytest.raises(ValueError, match="overflows"):
        C.GemmPlan(2**40, 2**30, 16, 2**30, 16, False, 16, False, 1, 0)
    with pytest.raises(ValueError, match="overflows"):
        C.ConvPlan(2**31, 2**20, 2**20, 2**20, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, [1, 1, 1, 1])
    with pytest.raises(ValueError, match="input"):
        C.PoolPlan(1, 0, 4, False)
    with pytest.raises(ValueError, match="input: row stride"):
        C.GemmPlan(4, 8, 16, 7, 16, False, 16, False, 1, 0)
    # Residual and scale pointers come per call: their checks run then, before any access.
    a, c, r, s = torch.zeros(4, 8), torch.zeros(4, 16), torch.zeros(4, 16), torch.ones(1, 8)
    packed = OPS.pack_gemm_weight(torch.randn(16, 8), None)
    plan = C.GemmPlan(4, 8, 16, 8, 16, True, 15, False, 1, 0)
    with pytest.raises(ValueError, match="residual"):
        plan.run(a.data_ptr(), packed.data_ptr(), c.data_ptr(), r.data_ptr(), 0, 1)
    plan = C.GemmPlan(4, 8, 16, 8, 16, False, 16, True, 0, 0)
    with pytest.raises(ValueError, match="input_scale"):
        plan.run(a.data_ptr(), packed.data_ptr(), c.data_ptr(), 0, s.data_ptr(), 1)
    assert not c.any()
    with pytest.raises(ValueError, match="activation"):
        C.GemmPlan(4, 8, 16, 8, 16, False, 16, False, 1, 99)
    with pytest.raises(ValueError, match="activation"):
        C.ConvPlan(1, 3, 9, 9, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 99, [243, 81, 9, 1])
    with pytest.raises(ValueError, match="input: expected 4 strides"):
        C.ConvPlan(1, 3, 9, 9, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, [81, 9, 1])
    with pytest.raises(ValueError, match="weight"):
        C.pack_gemm_ptr(0, 0, 0, 16, 0)
