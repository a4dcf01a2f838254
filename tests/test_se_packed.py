"""pack_se_weights / squeeze_excite_packed: the SE op with its four weight tensors packed once
(what FusedSqueezeExcite calls). Same results as squeeze_excite, bit for bit, on every ISA;
opcheck; bad input named; the fused module packs once and repacks on load."""
import pytest
import torch

import mnv3ext
from mnv3ext import ops, reference
from mnv3ext.nn import FusedSqueezeExcite

pack = torch.ops.mnv3ext.pack_se_weights
se_packed = torch.ops.mnv3ext.squeeze_excite_packed


def se_args(channels=24, squeeze=8, channels_last=False, biases=True, seed=1, size=(7, 5)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, *size, generator=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return (x, torch.randn(squeeze, channels, 1, 1, generator=g),
            torch.randn(squeeze, generator=g) if biases else None,
            torch.randn(channels, squeeze, 1, 1, generator=g),
            torch.randn(channels, generator=g) if biases else None)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("channels,squeeze", [(1, 1), (7, 3), (8, 8), (9, 4), (16, 4), (17, 5), (33, 8),
                                              (72, 24), (120, 32), (131, 40)])
def test_packed_equals_unpacked_bit_for_bit_on_every_isa(isa, channels, squeeze, channels_last):
    x, w1, b1, w2, b2 = se_args(channels, squeeze, channels_last)
    packed = pack(w1, b1, w2, b2)
    for act, gate in (("relu", "hardsigmoid"), ("hardswish", "sigmoid")):
        with mnv3ext.use_isa(isa):
            got = ops.squeeze_excite_packed(x, packed, squeeze, act, gate)
            torch.testing.assert_close(got, torch.ops.mnv3ext.squeeze_excite(x, w1, b1, w2, b2, act, gate),
                                       rtol=0, atol=0)
            torch.testing.assert_close(got, se_packed(x, packed, squeeze, act, gate), rtol=0, atol=0)
        expected = reference.squeeze_excite(x.double(), w1.double(), b1.double(), w2.double(), b2.double(),
                                            act, gate)
        torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
        assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_missing_biases_pack_as_zeros():
    x, w1, _, w2, _ = se_args(biases=False)
    packed = pack(w1, None, w2, None)
    torch.testing.assert_close(ops.squeeze_excite_packed(x, packed, 8, "relu", "sigmoid"),
                               torch.ops.mnv3ext.squeeze_excite(x, w1, None, w2, None, "relu", "sigmoid"),
                               rtol=0, atol=0)


def test_layout_sections_start_on_64_byte_boundaries():
    _, w1, b1, w2, b2 = se_args(channels=9, squeeze=3)
    packed = pack(w1, b1, w2, b2)
    # [fc1 (27) | pad | fc1 bias (3) | pad | fc2 (27) | pad | fc2 bias (9) | pad], 16-float sections
    assert packed.shape == (32 + 16 + 32 + 16,)
    torch.testing.assert_close(packed[:27], w1.reshape(-1), rtol=0, atol=0)
    torch.testing.assert_close(packed[32:35], b1, rtol=0, atol=0)
    torch.testing.assert_close(packed[48:75], w2.reshape(-1), rtol=0, atol=0)
    torch.testing.assert_close(packed[80:89], b2, rtol=0, atol=0)
    assert packed[27:32].abs().sum() == 0 and packed[89:].abs().sum() == 0


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(channels_last):
    x, w1, b1, w2, b2 = se_args(channels_last=channels_last)
    torch.library.opcheck(pack.default, (w1, b1, w2, b2))
    torch.library.opcheck(pack.default, (w1.flatten(1), None, w2.flatten(1), None))
    torch.library.opcheck(se_packed.default, (x, pack(w1, b1, w2, b2), 8, "hardswish", "hardsigmoid"))


def test_non_contiguous_input_and_batch_zero():
    x, w1, b1, w2, b2 = se_args(channels=16, size=(9, 9))
    packed = pack(w1, b1, w2, b2)
    view = x[:, :, ::2, 1:]
    torch.testing.assert_close(ops.squeeze_excite_packed(view, packed, 8, "relu", "hardsigmoid"),
                               torch.ops.mnv3ext.squeeze_excite(view.contiguous(), w1, b1, w2, b2, "relu",
                                                                "hardsigmoid"), rtol=0, atol=0)
    assert ops.squeeze_excite_packed(x[:0], packed, 8, "relu", "hardsigmoid").shape == (0, 16, 9, 9)


def test_strided_packed_weights_are_read_as_their_values():
    x, w1, b1, w2, b2 = se_args()
    packed = pack(w1, b1, w2, b2)
    spaced = torch.zeros(2 * packed.numel())
    spaced[::2] = packed
    view = spaced[::2]  # the right length and values, stride 2
    expected = torch.ops.mnv3ext.squeeze_excite(x, w1, b1, w2, b2, "relu", "sigmoid")
    for fn in (se_packed, ops.squeeze_excite_packed):
        torch.testing.assert_close(fn(x, view, 8, "relu", "sigmoid"), expected, rtol=0, atol=0)
    assert torch.equal(spaced[1::2], torch.zeros(packed.numel()))  # the input is not modified


def _bad_calls():
    x, w1, b1, w2, b2 = se_args()
    packed = pack(w1, b1, w2, b2)
    return {
        "float64 input": ((x.double(), packed, 8, "relu", "sigmoid"), TypeError, "input: expected dtype float32"),
        "float64 packed": ((x, packed.double(), 8, "relu", "sigmoid"), TypeError,
                           "packed_weights: expected dtype float32"),
        "2-d packed": ((x, packed[None], 8, "relu", "sigmoid"), ValueError, "packed_weights: expected 1 dimensions"),
        "short packed": ((x, packed[:-16], 8, "relu", "sigmoid"), ValueError, "packed_weights: expected"),
        "squeeze mismatch": ((x, packed, 4, "relu", "sigmoid"), ValueError, "packed_weights: expected"),
        "squeeze 0": ((x, packed, 0, "relu", "sigmoid"), ValueError, "squeeze: expected an int >= 1"),
        "channels mismatch": ((x[:, :16], packed, 8, "relu", "sigmoid"), ValueError, "packed_weights: expected"),
        "activation": ((x, packed, 8, "gelu", "sigmoid"), ValueError, "activation: expected one of"),
        "gate": ((x, packed, 8, "relu", "tanh"), ValueError, "gate: expected one of"),
        "meta packed": ((x, packed.to("meta"), 8, "relu", "sigmoid"), ValueError,
                        "packed_weights: expected device"),
        "sparse input": ((x.to_sparse(), packed, 8, "relu", "sigmoid"), ValueError, "input: expected a dense"),
        **({"mkldnn input": ((x.to_mkldnn(), packed, 8, "relu", "sigmoid"), ValueError, "input: expected a dense")}
           if torch.backends.mkldnn.is_available() else {}),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
@pytest.mark.parametrize("entry", ["torch.ops", "mnv3ext.ops"])
def test_bad_input_is_named(case, entry):
    args, error, message = _bad_calls()[case]
    before = [a.clone() if isinstance(a, torch.Tensor) and a.layout == torch.strided and a.device.type == "cpu"
              else None for a in args]
    fn = se_packed if entry == "torch.ops" else ops.squeeze_excite_packed
    with pytest.raises(error, match=message):
        fn(*args)
    for a, b in zip(args, before):
        if b is not None:
            assert torch.equal(a, b)


@pytest.mark.parametrize("changes,message", [
    (dict(w2=torch.randn(24, 4)), "fc2_weight: expected shape \\(24, 8\\)"),
    (dict(b1=torch.randn(7)), "fc1_bias: expected shape \\(8,\\)"),
    (dict(b2=torch.randn(23)), "fc2_bias: expected shape \\(24,\\)"),
    (dict(w1=torch.randn(8, 24, 3, 1)), "fc1_weight: expected shape"),
    (dict(w1=torch.randn(8, 24).double()), "fc1_weight: expected dtype float32"),
])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_pack_rejects_bad_weights_on_cpu_and_fake_kernels_alike(changes, message, device):
    _, w1, b1, w2, b2 = se_args()
    a = {"w1": w1, "b1": b1, "w2": w2, "b2": b2, **changes}
    a = {k: v.to(device) for k, v in a.items()}
    with pytest.raises((ValueError, TypeError), match=message):
        pack(a["w1"], a["b1"], a["w2"], a["b2"])


def test_fused_module_packs_once_and_repacks_on_load():
    _, w1, b1, w2, b2 = se_args()
    m = FusedSqueezeExcite(w1, b1, w2, b2, "hardswish", "sigmoid").eval()
    x = torch.randn(1, 24, 6, 6)
    first = m.packed_weights
    m(x)
    assert m.packed_weights is first  # not repacked per call
    other = FusedSqueezeExcite(torch.randn(8, 24, 1, 1), None, torch.randn(24, 8, 1, 1), None,
                               "hardswish", "sigmoid").eval()
    other.load_state_dict(m.state_dict())
    assert "packed_weights" not in m.state_dict()
    torch.testing.assert_close(other(x), m(x), rtol=0, atol=0)
    torch.testing.assert_close(m(x), torch.ops.mnv3ext.squeeze_excite(x, w1, b1, w2, b2, "hardswish", "sigmoid"),
                               rtol=0, atol=0)


def test_fused_module_export_saves_and_loads_in_a_fresh_process(tmp_path):
    from test_ops_api import run_python

    _, w1, b1, w2, b2 = se_args()
    m = FusedSqueezeExcite(w1, b1, w2, b2, "relu", "hardsigmoid").eval()
    x = torch.randn(2, 24, 9, 9)
    program = torch.export.export(m, (x,))
    assert "mnv3ext.squeeze_excite_packed" in str(program.graph)
    torch.export.save(program, str(tmp_path / "se.pt2"))
    torch.save({"x": x, "expected": m(x)}, tmp_path / "io.pt")
    result = run_python(f"""
        import torch, mnv3ext
        program = torch.export.load({str(tmp_path / 'se.pt2')!r})
        io = torch.load({str(tmp_path / 'io.pt')!r})
        torch.testing.assert_close(program.module()(io["x"]), io["expected"], rtol=0, atol=0)
        print("ok")
    """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_fused_module_torchscript_round_trip(tmp_path):
    _, w1, b1, w2, b2 = se_args()
    m = FusedSqueezeExcite(w1, b1, w2, b2, "hardswish", "sigmoid").eval()
    path = tmp_path / "se.ts"
    torch.jit.save(torch.jit.script(m), str(path))
    x = torch.randn(1, 24, 5, 6).to(memory_format=torch.channels_last)
    loaded = torch.jit.load(str(path))
    assert "squeeze_excite_packed" in str(loaded.graph)
    torch.testing.assert_close(loaded(x), m(x), rtol=0, atol=0)
