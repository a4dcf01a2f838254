"""The torch op surface: opcheck, torch.compile / export / TorchScript, threads, ISA selection."""
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch

import mnv3ext
from mnv3ext import reference
from mnv3ext.nn import FusedDepthwiseConv2d, FusedSqueezeExcite

def run_python(code, env=None):
    # Run outside the source tree so the child imports the same mnv3ext as this process
    # (in a checkout without an in-tree build, the source folder has no _C module).
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(mnv3ext.__file__)))
    env = {**os.environ, **(env or {}), "PYTHONPATH": package_parent}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, env=env, timeout=300)


def dw_args(channels_last=False, bias=True):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 24, 9, 11, generator=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return (x, torch.randn(24, 1, 3, 3, generator=g), torch.randn(24, generator=g) if bias else None,
            [2, 1], [1, 0, 2, 1], [1, 1], "hardswish")


def se_args(channels_last=False):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 24, 7, 5, generator=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return (x, torch.randn(8, 24, 1, 1, generator=g), torch.randn(8, generator=g),
            torch.randn(24, 8, 1, 1, generator=g), None, "hardswish", "hardsigmoid")


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(channels_last):
    x, w, b, *rest = dw_args(channels_last)
    torch.library.opcheck(torch.ops.mnv3ext.dwconv2d.default, (x, w, b, *rest))
    torch.library.opcheck(torch.ops.mnv3ext.dwconv2d.default, (x, w, None, *rest))
    packed = torch.ops.mnv3ext.pack_dwconv_weight(w, b)
    torch.library.opcheck(torch.ops.mnv3ext.pack_dwconv_weight.default, (w, b))
    params = mnv3ext.ops.dwconv_params([3, 3], *rest[:3])
    torch.library.opcheck(torch.ops.mnv3ext.dwconv2d_packed.default, (x, packed, params, rest[3]))
    torch.library.opcheck(torch.ops.mnv3ext.squeeze_excite.default, se_args(channels_last))


class TinyBlock(torch.nn.Module):
    """A depthwise layer and an SE block through the raw ops, as a user might write them."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.register_buffer("w", torch.randn(16, 1, 5, 5, generator=g) / 5)
        self.register_buffer("b", torch.randn(16, generator=g))
        self.register_buffer("fc1", torch.randn(8, 16, generator=g) / 4)
        self.register_buffer("fc2", torch.randn(16, 8, generator=g) / 3)

    def forward(self, x):
        y = torch.ops.mnv3ext.dwconv2d(x, self.w, self.b, [2, 2], [2, 2], [1, 1], "relu6")
        return torch.ops.mnv3ext.squeeze_excite(y, self.fc1, None, self.fc2, None, "relu", "sigmoid")


def tiny_reference(m, x):
    y = reference.dwconv2d(x, m.w, m.b, [2, 2], [2, 2], [1, 1], "relu6")
    return reference.squeeze_excite(y, m.fc1, None, m.fc2, None, "relu", "sigmoid")


def test_torch_compile_fullgraph_inductor():
    torch._dynamo.reset()
    m = TinyBlock().eval()
    compiled = torch.compile(m, fullgraph=True, backend="inductor")
    for shape in [(1, 16, 20, 20), (3, 16, 13, 17)]:
        x = torch.randn(shape)
        torch.testing.assert_close(compiled(x), tiny_reference(m, x), rtol=1e-5, atol=1e-5)


def test_torch_export_save_and_load_in_fresh_process(tmp_path):
    m = TinyBlock().eval()
    x = torch.randn(2, 16, 15, 15)
    exported = torch.export.export(m, (x,))
    path = tmp_path / "tiny.pt2"
    torch.export.save(exported, str(path))
    torch.save({"x": x, "expected": tiny_reference(m, x)}, tmp_path / "io.pt")
    result = run_python(f"""
        import torch, mnv3ext
        program = torch.export.load({str(path)!r})
        io = torch.load({str(tmp_path / 'io.pt')!r})
        torch.testing.assert_close(program.module()(io["x"]), io["expected"], rtol=1e-5, atol=1e-5)
        print("ok")
    """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_torchscript_of_ops_and_fused_modules(tmp_path):
    m = TinyBlock().eval()
    scripted = torch.jit.script(m)
    x = torch.randn(1, 16, 11, 11)
    torch.testing.assert_close(scripted(x), tiny_reference(m, x), rtol=1e-5, atol=1e-5)
    seq = torch.nn.Sequential(
        FusedDepthwiseConv2d(torch.randn(16, 1, 3, 3), torch.randn(16), 1, 1, 1, "hardswish"),
        FusedSqueezeExcite(torch.randn(4, 16, 1, 1), torch.randn(4), torch.randn(16, 4, 1, 1), None),
    ).eval()
    path = tmp_path / "seq.ts"
    torch.jit.save(torch.jit.script(seq), str(path))
    torch.testing.assert_close(torch.jit.load(str(path))(x), seq(x))


# Inputs dense in both memory formats (C == 1 or H == W == 1), with the strides each format gives:
# the output's format must be the one F.conv2d picks from those strides.
AMBIGUOUS_INPUTS = [
    ((2, 8, 1, 1), (8, 1, 1, 1)), ((2, 8, 1, 1), (8, 1, 8, 8)), ((1, 8, 1, 1), (8, 1, 8, 8)),
    ((2, 1, 5, 6), (30, 30, 6, 1)), ((2, 1, 5, 6), (30, 1, 6, 1)), ((2, 1, 1, 1), (1, 1, 1, 1)),
    ((2, 8, 1, 4), (32, 1, 32, 8)), ((2, 8, 4, 1), (32, 4, 1, 1)),
]


@pytest.mark.parametrize("shape, strides", AMBIGUOUS_INPUTS, ids=str)
def test_output_format_of_inputs_dense_in_both_formats_follows_pytorch(shape, strides):
    g = torch.Generator().manual_seed(7)
    x = torch.empty_strided(shape, strides).normal_(generator=g)
    channels = shape[1]
    w, b = torch.randn(channels, 1, 3, 3, generator=g), torch.randn(channels, generator=g)
    expected = torch.nn.functional.conv2d(x, w, b, padding=2, groups=channels)
    for out in (torch.ops.mnv3ext.dwconv2d(x, w, b, [1, 1], [2, 2], [1, 1], "none"),
                mnv3ext.ops.dwconv2d(x, w, b, [1, 1], [2, 2], [1, 1], "none")):
        assert out.stride() == expected.stride()
        torch.testing.assert_close(out, reference.dwconv2d(x, w, b, [1, 1], [2, 2], [1, 1], "none"))
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = torch.ops.mnv3ext.dwconv2d(mode.from_tensor(x), mode.from_tensor(w), mode.from_tensor(b),
                                          [1, 1], [2, 2], [1, 1], "none")
    assert fake.stride() == expected.stride()


@pytest.mark.parametrize("channels_last", [False, True])
def test_empty_batch_keeps_its_memory_format(channels_last):
    # Dense in both formats by PyTorch's rules (numel 0), which then reads it as NCHW: the ops keep
    # channels_last in, channels_last out (the fake kernel agrees).
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.empty(0, 8, 4, 4, memory_format=fmt)
    w = torch.randn(8, 1, 3, 3)
    fc1, fc2 = torch.randn(4, 8), torch.randn(8, 4)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fx, fw, f1, f2 = (mode.from_tensor(t) for t in (x, w, fc1, fc2))
        fakes = (torch.ops.mnv3ext.dwconv2d(fx, fw, None, [1, 1], [2, 2], [1, 1], "none"),
                 torch.ops.mnv3ext.squeeze_excite(fx, f1, None, f2, None, "relu", "sigmoid"))
    for out in (torch.ops.mnv3ext.dwconv2d(x, w, None, [1, 1], [2, 2], [1, 1], "none"),
                mnv3ext.ops.dwconv2d(x, w, None, [1, 1], [2, 2], [1, 1], "none"),
                torch.ops.mnv3ext.squeeze_excite(x, fc1, None, fc2, None, "relu", "sigmoid")) + fakes:
        assert out.shape[0] == 0
        assert out.stride() == torch.empty(out.shape, memory_format=fmt).stride()


@pytest.mark.parametrize("channels_last", [False, True])
def test_one_and_two_threads_bit_identical(isa, channels_last):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 72, 56, 56, generator=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w, b = torch.randn(72, 1, 3, 3, generator=g), torch.randn(72, generator=g)
    fc1, fc2 = torch.randn(24, 72, generator=g), torch.randn(72, 24, generator=g)
    previous = torch.get_num_threads()
    outputs = []
    try:
        for threads in (1, 2, 1, 2):
            torch.set_num_threads(threads)
            y = torch.ops.mnv3ext.dwconv2d(x, w, b, [1, 1], [1, 1], [1, 1], "hardswish")
            outputs.append((y, torch.ops.mnv3ext.squeeze_excite(y, fc1, None, fc2, None, "relu", "hardsigmoid")))
    finally:
        torch.set_num_threads(previous)
    for y, s in outputs[1:]:
        assert torch.equal(y, outputs[0][0]) and torch.equal(s, outputs[0][1])


def test_no_second_openmp_runtime():
    result = run_python("""
        import torch, mnv3ext
        x = torch.randn(1, 64, 56, 56)
        torch.ops.mnv3ext.dwconv2d(x, torch.randn(64, 1, 3, 3), None, [1, 1], [1, 1], [1, 1], "relu")
        libs = set()
        for line in open("/proc/self/maps"):
            path = line.split()[-1]
            if any(tag in path for tag in ("libgomp", "libiomp", "libomp")):
                libs.add(path)
        print(len(libs), sorted(libs))
        import mnv3ext._C as C
        needed = open(C.__file__, "rb").read()
        print("links_openmp", any(tag in needed for tag in (b"libgomp", b"libiomp", b"libomp")))
    """)
    assert result.returncode == 0, result.stderr
    count_line, link_line = result.stdout.strip().splitlines()
    assert int(count_line.split()[0]) <= 1, count_line
    assert link_line == "links_openmp False"


def test_mnv3ext_isa_env_forces_a_path():
    for name in mnv3ext.available_isas():
        result = run_python("import mnv3ext; print(mnv3ext.current_isa())", env={"MNV3EXT_ISA": name})
        assert result.returncode == 0 and result.stdout.strip() == name, result.stderr


def test_mnv3ext_isa_env_rejects_unknown_or_unsupported():
    result = run_python("import mnv3ext", env={"MNV3EXT_ISA": "sse9"})
    assert result.returncode != 0 and "MNV3EXT_ISA" in result.stderr and "sse9" in result.stderr
    foreign = "neon" if "avx2" in mnv3ext.available_isas() else "avx512"
    result = run_python("import mnv3ext", env={"MNV3EXT_ISA": foreign})
    assert result.returncode != 0 and "MNV3EXT_ISA" in result.stderr


def test_set_isa_rejects_bad_names():
    with pytest.raises(ValueError, match="MNV3EXT_ISA"):
        mnv3ext.set_isa("nonsense")
    with pytest.raises(TypeError, match="name"):
        mnv3ext.set_isa(3)


def test_gradients_are_refused_clearly():
    x, w, b, *rest = dw_args()
    w.requires_grad_(True)
    with pytest.raises(RuntimeError, match="inference-only"):
        torch.ops.mnv3ext.dwconv2d(x, w, b, *rest)
    with torch.no_grad():
        torch.ops.mnv3ext.dwconv2d(x, w, b, *rest)
    module = FusedDepthwiseConv2d(torch.randn(4, 1, 3, 3), None, 1, 1)
    with pytest.raises(RuntimeError, match="eval"):
        module(torch.randn(1, 4, 5, 5))  # still in training mode


def test_fused_module_state_dict_repacks():
    a = FusedDepthwiseConv2d(torch.randn(8, 1, 3, 3), torch.randn(8), 1, 1, 1, "relu").eval()
    b = FusedDepthwiseConv2d(torch.randn(8, 1, 3, 3), None, 1, 1, 1, "relu").eval()
    x = torch.randn(1, 8, 6, 6)
    assert not torch.equal(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", ["dwconv2d", "dwconv2d_packed", "squeeze_excite"])
def test_reference_has_the_op_signatures(name):
    # Same argument names as the op schema, so keyword calls work on either path.
    import inspect
    schema_names = [a.name for a in getattr(torch.ops.mnv3ext, name).default._schema.arguments]
    assert list(inspect.signature(getattr(reference, name)).parameters) == schema_names
