"""Bad input raises a clear Python exception naming the argument; nothing crashes or is modified."""
import pytest
import torch

import mnv3ext._C as C

dw = torch.ops.mnv3ext.dwconv2d
se = torch.ops.mnv3ext.squeeze_excite


def good_dw():
    return dict(input=torch.randn(1, 8, 6, 6), weight=torch.randn(8, 1, 3, 3), bias=torch.randn(8),
                stride=[1, 1], padding=[1, 1], dilation=[1, 1], activation="relu")


def good_se():
    return dict(input=torch.randn(1, 8, 5, 5), fc1_weight=torch.randn(4, 8, 1, 1), fc1_bias=torch.randn(4),
                fc2_weight=torch.randn(8, 4, 1, 1), fc2_bias=torch.randn(8), activation="relu", gate="hardsigmoid")


def call_dw(**changes):
    a = {**good_dw(), **changes}
    return dw(a["input"], a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"], a["activation"])


def call_se(**changes):
    a = {**good_se(), **changes}
    return se(a["input"], a["fc1_weight"], a["fc1_bias"], a["fc2_weight"], a["fc2_bias"], a["activation"], a["gate"])


BAD_DTYPES = [torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8]


@pytest.mark.parametrize("dtype", BAD_DTYPES)
@pytest.mark.parametrize("arg", ["input", "weight", "bias"])
def test_dwconv_rejects_dtype(arg, dtype):
    with pytest.raises(TypeError, match=f"{arg}: expected dtype float32"):
        call_dw(**{arg: good_dw()[arg].to(dtype)})


@pytest.mark.parametrize("dtype", BAD_DTYPES)
@pytest.mark.parametrize("arg", ["input", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias"])
def test_se_rejects_dtype(arg, dtype):
    with pytest.raises(TypeError, match=f"{arg}: expected dtype float32"):
        call_se(**{arg: good_se()[arg].to(dtype)})


@pytest.mark.parametrize("arg", ["weight", "bias"])
def test_dwconv_rejects_mixed_devices(arg):
    with pytest.raises(ValueError, match=f"{arg}: expected device"):
        call_dw(**{arg: good_dw()[arg].to("meta")})


def test_dwconv_meta_input_with_cpu_weight_is_refused():
    with pytest.raises(ValueError, match="weight: expected device meta"):
        call_dw(input=torch.randn(1, 8, 6, 6, device="meta"))


@pytest.mark.parametrize("arg", ["fc1_weight", "fc2_bias"])
def test_se_rejects_mixed_devices(arg):
    with pytest.raises(ValueError, match=f"{arg}: expected device"):
        call_se(**{arg: good_se()[arg].to("meta")})


@pytest.mark.parametrize("changes,message", [
    (dict(weight=torch.randn(7, 1, 3, 3)), "weight: expected shape"),
    (dict(weight=torch.randn(8, 2, 3, 3)), "weight: expected shape"),
    (dict(weight=torch.randn(8, 3, 3)), "weight: expected 4 dimensions"),
    (dict(weight=torch.randn(8, 1, 9, 3)), "weight: kernel size"),
    (dict(weight=torch.randn(8, 1, 3, 8)), "weight: kernel size"),
    (dict(weight=torch.randn(8, 1, 0, 3)), "weight: kernel size"),
    (dict(bias=torch.randn(7)), "bias: expected shape"),
    (dict(bias=torch.randn(8, 1)), "bias: expected 1 dimensions"),
    (dict(input=torch.randn(8, 6, 6)), "input: expected 4 dimensions"),
    (dict(input=torch.randn(1, 8, 0, 6)), "input: C, H and W must be >= 1"),
    (dict(stride=[0, 1]), "stride: values must be >= 1"),
    (dict(stride=[1, -2]), "stride: values must be >= 1"),
    (dict(stride=[1, 1, 1]), "stride: expected 2 values"),
    (dict(dilation=[0, 1]), "dilation: values must be >= 1"),
    (dict(padding=[-1, 1]), "padding: values must be >= 0"),
    (dict(padding=[1, 1, -1, 0]), "padding: values must be >= 0"),
    (dict(padding=[1]), "padding: expected 2"),
    (dict(padding=[1, 1, 1]), "padding: expected 2"),
    (dict(padding=[0, 0], input=torch.randn(1, 8, 2, 6)), "padding: padded input"),
    (dict(padding=[0, 0], dilation=[3, 1]), "padding: padded input"),
    (dict(stride=[2**31, 1]), "stride: values must be <= 2147483647"),
    (dict(padding=[0, 2**31]), "padding: values must be <= 2147483647"),
    (dict(dilation=[1, 2**31]), "dilation: values must be <= 2147483647"),
    (dict(padding=[2**30, 2**30]), "padding: size overflows 64-bit indexing"),
    (dict(activation="gelu"), "activation: expected one of"),
    (dict(activation="Relu"), "activation: expected one of"),
    (dict(activation=""), "activation: expected one of"),
])
def test_dwconv_rejects_bad_arguments(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call_dw(**changes)


@pytest.mark.parametrize("changes,message", [
    (dict(fc1_weight=torch.randn(4, 7, 1, 1)), "fc1_weight: expected shape"),
    (dict(fc1_weight=torch.randn(4, 8, 3, 3)), "fc1_weight: expected shape"),
    (dict(fc1_weight=torch.randn(4, 8, 1)), "fc1_weight: expected 2 or 4 dimensions"),
    (dict(fc2_weight=torch.randn(8, 5, 1, 1)), "fc2_weight: expected shape"),
    (dict(fc2_weight=torch.randn(7, 4)), "fc2_weight: expected shape"),
    (dict(fc1_bias=torch.randn(5)), "fc1_bias: expected shape"),
    (dict(fc2_bias=torch.randn(4)), "fc2_bias: expected shape"),
    (dict(input=torch.randn(8, 5, 5)), "input: expected 4 dimensions"),
    (dict(activation="sigmoid"), "activation: expected one of"),
    (dict(gate="relu"), "gate: expected one of"),
    (dict(gate="hard_sigmoid"), "gate: expected one of"),
])
def test_se_rejects_bad_arguments(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call_se(**changes)


def test_packed_weight_shape_is_checked():
    x = torch.randn(1, 20, 5, 5)
    packed = torch.ops.mnv3ext.pack_dwconv_weight(torch.randn(20, 1, 3, 3), None)
    with pytest.raises(ValueError, match="packed_weight: expected shape"):
        torch.ops.mnv3ext.dwconv2d_packed(x, packed, [5, 5, 1, 1, 2, 2, 2, 2, 1, 1], "relu")
    with pytest.raises(ValueError, match="packed_weight: expected shape"):
        torch.ops.mnv3ext.dwconv2d_packed(torch.randn(1, 40, 5, 5), packed, [3, 3, 1, 1, 1, 1, 1, 1, 1, 1], "relu")


@pytest.mark.parametrize("params, message", [
    ([3, 3, 1, 1, 1, 1, 1, 1, 1], "conv_params: expected 10 values"),
    ([3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1], "conv_params: expected 10 values"),
    ([0, 3, 1, 1, 1, 1, 1, 1, 1, 1], "conv_params: kernel_size: values must be >= 1"),
    ([3, 3, 1, 0, 1, 1, 1, 1, 1, 1], "conv_params: stride: values must be >= 1"),
    ([3, 3, 1, 1, 1, -1, 1, 1, 1, 1], "conv_params: padding: values must be >= 0"),
    ([3, 3, 1, 1, 1, 1, 1, 1, 1, 0], "conv_params: dilation: values must be >= 1"),
    ([3, 3, 2**31, 1, 1, 1, 1, 1, 1, 1], "conv_params: stride: values must be <= 2147483647"),
    ([3, 3, 1, 1, 0, 0, 0, 0, 9, 9], "padding: padded input"),
])
def test_packed_conv_params_are_checked(params, message):
    x = torch.randn(1, 20, 5, 5)
    packed = torch.ops.mnv3ext.pack_dwconv_weight(torch.randn(20, 1, 3, 3), None)
    with pytest.raises(ValueError, match=message):
        torch.ops.mnv3ext.dwconv2d_packed(x, packed, params, "relu")
    with pytest.raises(ValueError, match=message):  # the fake kernel agrees
        torch.ops.mnv3ext.dwconv2d_packed(x.to("meta"), packed.to("meta"), params, "relu")


@pytest.mark.parametrize("arg, value", [("stride", [1.5, 1]), ("stride", ["2", 1]), ("padding", [0.0, 1]),
                                        ("dilation", [1, None])])
def test_non_integer_conv_arguments_are_refused_naming_them(arg, value):
    # torch.ops checks the types against the schema; the eager entry point checks them itself.
    import mnv3ext.ops as ops
    a = {**good_dw(), arg: value}
    with pytest.raises(TypeError, match=f"{arg}: expected integers"):
        ops.dwconv2d(a["input"], a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"], a["activation"])
    with pytest.raises((TypeError, RuntimeError), match=arg):
        call_dw(**{arg: value})


def test_arguments_that_reach_no_cpu_kernel_are_named():
    # No tensor at all, or a quantized CPU tensor: the dispatcher finds no CPU kernel for them.
    with pytest.raises(TypeError, match="input: expected a Tensor"):
        dw(None, None, None, [1, 1], [1, 1], [1, 1], "relu")
    q = torch.quantize_per_tensor(torch.randn(1, 8, 6, 6), 0.1, 0, torch.quint8)
    with pytest.raises(TypeError, match="input: expected dtype float32"):
        call_dw(input=q)
    with pytest.raises(TypeError, match="fc1_weight: expected a Tensor"):
        se(torch.randn(1, 8, 5, 5), None, None, None, None, "relu", "sigmoid")


def test_conv_params_of_the_wrong_type_are_named():
    import mnv3ext.ops as ops
    packed = torch.ops.mnv3ext.pack_dwconv_weight(torch.randn(8, 1, 3, 3), None)
    with pytest.raises(TypeError, match="conv_params: stride: expected integers"):
        ops.dwconv2d_packed(torch.randn(1, 8, 6, 6), packed, [3, 3, 1.5, 1, 1, 1, 1, 1, 1, 1], "relu")


def test_sizes_overflowing_64bit_indexing_are_refused_before_any_access():
    # Plans are built from sizes alone: the size check fires before any memory exists.
    with pytest.raises(ValueError, match="overflows 64-bit"):
        C.DwConvPlan(2**31, 2**31, 2**20, 2**20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3, False)
    with pytest.raises(ValueError, match="overflows 64-bit"):
        C.SePlan(2**31, 2**31, 2**31, 4, 1, 4, False)


def test_ops_never_modify_or_alias_inputs():
    a = good_dw()
    snapshot = {k: v.clone() for k, v in a.items() if isinstance(v, torch.Tensor)}
    out = dw(a["input"], a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"], a["activation"])
    for k, v in snapshot.items():
        assert torch.equal(a[k], v), k
    assert out.data_ptr() != a["input"].data_ptr()


def test_numpy_api_rejects_bad_input():
    import numpy as np

    x = np.zeros((1, 8, 5, 5), np.float32)
    w = np.zeros((8, 1, 3, 3), np.float32)
    with pytest.raises(TypeError, match="input: expected dtype float32"):
        C.dwconv2d(x.astype(np.float64), w)
    with pytest.raises(ValueError, match="weight: first dimension"):
        C.dwconv2d(x, w[:4])
    with pytest.raises(ValueError, match="activation: unknown"):
        C.dwconv2d(x, w, activation="swish")
    with pytest.raises(ValueError, match="padding"):
        C.dwconv2d(x, w, padding=[1, 1, 1])
    with pytest.raises(ValueError, match="gate: unknown"):
        C.squeeze_excite(x, np.zeros((4, 8), np.float32), None, np.zeros((8, 4), np.float32), None, "relu", "x")


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("weight_shape,message", [
    ((8, 2, 3, 3), "weight: expected shape"),
    ((8, 1, 8, 3), "weight: expected C >= 1 and kernel sizes"),
    ((8, 3, 3), "weight: expected 4 dimensions"),
])
def test_pack_rejects_bad_weights_on_cpu_and_fake_kernels_alike(device, weight_shape, message):
    with pytest.raises(ValueError, match=message):
        torch.ops.mnv3ext.pack_dwconv_weight(torch.randn(weight_shape, device=device), None)
