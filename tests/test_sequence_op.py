"""``torch.ops.mnv3ext.sequential`` (a chain of packed-weight ops in one call) and the
``FusedSequence`` modules ``optimize`` emits.

Oracles, never the code under test: the same layers called one by one through their own ops
(tested against float64 references in their own suites) must give *bit-identical* results
with the same strides, since the sequence runs the same kernels; and ``mnv3ext.reference``'s
composition in float64. Programs are written out here from the documented format
(``mnv3ext._program``), not produced by the optimize pass.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch

import mnv3ext
from mnv3ext import models, reference
from mnv3ext.nn import FusedConv2d, FusedInvertedResidual, FusedLinear, FusedPointwiseConv2d, FusedSequence

OPS = torch.ops.mnv3ext
ISAS = mnv3ext.available_isas()
CL = torch.channels_last
CODE = {"none": 0, "relu": 1, "relu6": 2, "hardswish": 3, "hardsigmoid": 4, "sigmoid": 5}


def _r(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def stem(g, cin, cout, stride=2, channels_last_output=True, act="hardswish"):
    m = FusedConv2d(_r(g, cout, cin, 3, 3, scale=0.4), _r(g, cout, scale=0.1), stride=stride, padding=1,
                    activation=act).eval()
    m.channels_last_output = channels_last_output
    prog = [1, cout, CODE[act], int(channels_last_output), 3, 3, stride, stride, 1, 1, 1, 1, 1, 1]
    return m, prog, m.packed_weight


def block(g, cin, e, cout, k=3, stride=1, se=0, residual=False, expand=True, dw="hardswish"):
    s = max(se, 1)
    m = FusedInvertedResidual(
        dw_weight=_r(g, e, 1, k, k, scale=0.3), dw_bias=_r(g, e, scale=0.1), stride=stride, padding=(k // 2, k // 2),
        dw_activation=dw, expand_weight=_r(g, e, cin, 1, 1, scale=cin ** -0.5) if expand else None,
        expand_bias=_r(g, e, scale=0.1) if expand else None, expand_activation="hardswish",
        se_fc1_weight=_r(g, s, e, scale=e ** -0.5) if se else None, se_fc1_bias=_r(g, s) if se else None,
        se_fc2_weight=_r(g, e, s, scale=s ** -0.5) if se else None, se_fc2_bias=_r(g, e) if se else None,
        project_weight=_r(g, cout, e, 1, 1, scale=e ** -0.5), project_bias=_r(g, cout, scale=0.1),
        residual=residual).eval()
    return m, [2, *m.config], m.packed_weights


def pointwise(g, cin, cout, act="hardswish"):
    m = FusedPointwiseConv2d(_r(g, cout, cin, 1, 1, scale=cin ** -0.5), _r(g, cout, scale=0.1), act).eval()
    return m, [3, cout, CODE[act]], m.packed_weight


def linear(g, cin, cout, act="none"):
    m = FusedLinear(_r(g, cout, cin, scale=cin ** -0.5), _r(g, cout, scale=0.1), act).eval()
    return m, [6, cout, CODE[act]], m.packed_weight


POOL, FLATTEN = "pool", "flatten"


def chain(parts):
    """(layers one by one as a function, program, weights) of ``parts``: module triples, POOL, FLATTEN.
    The function keeps the tensors its pool step read in ``.pool_inputs``."""
    program, weights, calls, pool_inputs = [], [], [], []

    def pool(x):
        pool_inputs.append(x)
        return OPS.global_avg_pool(x)
    for part in parts:
        if part == POOL:
            program.append(4)
            calls.append(pool)
        elif part == FLATTEN:
            program.append(5)
            calls.append(lambda x: x.flatten(1))
        else:
            m, prog, w = part
            program += prog
            weights.append(w)
            calls.append(m)

    def one_by_one(x):
        pool_inputs.clear()
        for f in calls:
            x = f(x)
        return x
    one_by_one.pool_inputs = pool_inputs  # what the pool step saw, for the fuzz test's oracle
    return one_by_one, program, weights


def network(g, c=(9, 17), classes=15, channels_last_output=True):
    """Stem, blocks with and without expand / SE / residual / stride 2 and a 5x5 kernel, the last
    1x1, pool, flatten and a two-layer classifier: every step kind, channels at tile edges."""
    a, b = c
    return [stem(g, 3, a, channels_last_output=channels_last_output),
            block(g, a, a, a, expand=False, se=4, residual=True, dw="relu"),
            block(g, a, 4 * a, b, k=5, stride=2),
            block(g, b, 3 * b, b, se=8, residual=True),
            block(g, b, 2 * b, 16, k=5, stride=2, se=7),
            pointwise(g, 16, 33),
            POOL, FLATTEN,
            linear(g, 33, 40, "hardswish"), linear(g, 40, classes)]


def _threads(n):
    class Scope:
        def __enter__(self):
            self.previous = torch.get_num_threads()
            torch.set_num_threads(n)

        def __exit__(self, *exc):
            torch.set_num_threads(self.previous)
    return Scope()


@pytest.mark.parametrize("batch, size", [(1, (32, 32)), (2, (29, 23)), (3, (9, 13))])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_bit_identical_to_the_ops_one_by_one_on_every_isa(batch, size, layout):
    g = torch.Generator().manual_seed(batch * 100 + size[0])
    one_by_one, program, weights = chain(network(g))
    x = torch.randn(batch, 3, *size, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    elif layout == "strided":
        x = torch.randn(batch, 3, size[0], 2 * size[1], generator=g)[..., ::2]
    before = x.clone()
    for isa in ISAS:
        for threads in (1, 2):
            with mnv3ext.use_isa(isa), _threads(threads), torch.no_grad():
                expected = one_by_one(x)
                got = mnv3ext.ops.sequential(x, weights, program)
                via_op = OPS.sequential(x, weights, program)
            label = f"[{isa}, {threads} threads]"
            assert got.shape == expected.shape == (batch, 15), label
            assert torch.equal(got, expected), f"{label} max diff {float((got - expected).abs().max())}"
            assert torch.equal(via_op, expected), f"{label} torch.ops path differs"
    assert torch.equal(x, before), "the input was written"


@pytest.mark.parametrize("channels_last_input", [False, True])
@pytest.mark.parametrize("channels_last_output", [False, True])
def test_a_4d_result_keeps_the_format_the_ops_give(channels_last_input, channels_last_output):
    g = torch.Generator().manual_seed(3)
    parts = network(g, channels_last_output=channels_last_output)[:5]  # stem + 4 blocks: a feature map
    one_by_one, program, weights = chain(parts)
    x = torch.randn(2, 3, 21, 19, generator=g)
    if channels_last_input:
        x = x.contiguous(memory_format=CL)
    with torch.no_grad():
        expected = one_by_one(x)
        got = OPS.sequential(x, weights, program)
    assert got.dim() == 4 and got.stride() == expected.stride(), (got.stride(), expected.stride())
    assert torch.equal(got, expected)


def test_a_sequence_may_start_with_a_block_or_a_pool():
    g = torch.Generator().manual_seed(4)
    for parts, shape in [([block(g, 8, 24, 8, se=6, residual=True), block(g, 8, 16, 12, stride=2)], (2, 8, 11, 9)),
                         ([POOL, FLATTEN, linear(g, 8, 5)], (3, 8, 5, 6)),
                         ([pointwise(g, 8, 9, "relu6"), POOL], (1, 8, 4, 4))]:
        one_by_one, program, weights = chain(parts)
        for fmt in (torch.contiguous_format, CL):
            x = torch.randn(shape, generator=g).contiguous(memory_format=fmt)
            with torch.no_grad():
                expected = one_by_one(x)
                got = OPS.sequential(x, weights, program)
            assert got.stride() == expected.stride(), program[:1]
            if fmt is torch.contiguous_format and program[0] == 3:
                # the ops alone pool the NCHW intermediate plane by plane, the sequence its NHWC
                # one: the same mean, summed in another order
                torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
            else:
                assert torch.equal(got, expected), program[:1]


def test_matches_the_reference_composition_in_float64():
    g = torch.Generator().manual_seed(5)
    _, program, weights = chain(network(g))
    x = torch.randn(2, 3, 27, 31, generator=g)
    ref = reference.sequential(x.double(), [w.double() for w in weights], program)
    for isa in ISAS:
        with mnv3ext.use_isa(isa), torch.no_grad():
            got = OPS.sequential(x, weights, program)
        err = float((got.double() - ref).abs().max())
        assert err <= 1e-4 * float(ref.abs().max()), f"[{isa}] max error {err} vs |ref| {float(ref.abs().max())}"


@pytest.mark.parametrize("batch", [0, 1])
def test_empty_batch_and_fake_kernel_shapes(batch):
    g = torch.Generator().manual_seed(6)
    for parts in (network(g), network(g)[:4]):
        _, program, weights = chain(parts)
        for fmt in (torch.contiguous_format, CL):
            x = torch.randn(batch, 3, 17, 15, generator=g).contiguous(memory_format=fmt)
            with torch.no_grad():
                real = OPS.sequential(x, weights, program)
            fake = OPS.sequential(x.to("meta"), [w.to("meta") for w in weights], program)
            assert (real.shape, real.stride()) == (fake.shape, fake.stride())


def test_intermediate_buffers_reused_across_shapes_and_programs():
    g = torch.Generator().manual_seed(7)
    big = chain(network(g))
    small = chain(network(g, c=(7, 8))[:3])
    xs = [torch.randn(1, 3, 40, 36, generator=g), torch.randn(2, 3, 9, 9, generator=g)]
    with torch.no_grad():
        expected = {(i, j): f(x) for i, (f, _, _) in enumerate((big, small)) for j, x in enumerate(xs)}
        for _ in range(2):
            for (i, j), e in expected.items():
                _, program, weights = (big, small)[i]
                assert torch.equal(OPS.sequential(xs[j], weights, program), e), (i, j)


def test_opcheck():
    g = torch.Generator().manual_seed(8)
    _, program, weights = chain(network(g))
    torch.library.opcheck(OPS.sequential.default, (torch.randn(2, 3, 16, 18, generator=g), weights, program))
    _, program, weights = chain(network(g)[:3])
    torch.library.opcheck(OPS.sequential.default,
                          (torch.randn(1, 3, 15, 15, generator=g).contiguous(memory_format=CL), weights, program))


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error naming the argument, never a crash or a written input

def _bad_cases():
    g = torch.Generator().manual_seed(9)
    parts = network(g)
    _, program, weights = chain(parts)
    x = torch.randn(1, 3, 16, 16, generator=g)
    conv_len = 14
    yield "unknown kind", (x, weights, program + [9]), ValueError, "program: unknown step kind 9"
    yield "truncated", (x, weights, program[:-1]), ValueError, "program: step"
    yield "empty", (x, [], []), ValueError, "program: expected at least one step"
    yield "float in program", (x, weights, program[:-1] + [0.5]), TypeError, "program"  # (eager entry)
    yield "too few weights", (x, weights[:-1], program), ValueError, "weights: the program has 8"
    yield "weight of another layer", (x, [weights[2]] + weights[1:], program), ValueError, "weights[0]"
    yield "float64 weight", (x, weights[:2] + [weights[2].double()] + weights[3:], program), TypeError, "weights[2]"
    yield "float64 input", (x.double(), weights, program), TypeError, "input: expected dtype float32"
    yield "3-d input", (x[0], weights, program), ValueError, "input"
    yield "wrong input channels", (torch.randn(1, 4, 16, 16), weights, program), ValueError, "program step 0 (conv"
    yield "not a list", (x, weights[0], program), TypeError, "weights"
    yield "flatten of a feature map", (x, weights[:1], program[:conv_len] + [5]), ValueError, "program step 1 (flatten)"
    yield "linear on a feature map", (x, weights[:1] + [weights[-1]], program[:conv_len] + program[-3:]), \
        ValueError, "flatten first"
    yield "bad activation code", (x, weights, program[:2] + [42] + program[3:]), ValueError, "activation"


@pytest.mark.parametrize("case", list(_bad_cases()), ids=lambda c: c[0])
def test_bad_input_raises_naming_the_argument(case):
    _, args, error, text = case
    snapshot = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    with pytest.raises(error, match=re.escape(text)):
        mnv3ext.ops.sequential(*args)
    # torch.ops' schema parser refuses a float in int[] or a Tensor for Tensor[] itself (RuntimeError) before the kernel runs
    with pytest.raises(RuntimeError if case[0] in ("float in program", "not a list") else error):
        OPS.sequential(*args)
    assert torch.equal(args[0], snapshot[0]), "input written"


def test_grad_requiring_input_refused():
    g = torch.Generator().manual_seed(10)
    _, program, weights = chain(network(g)[:3])
    with pytest.raises(RuntimeError, match="inference-only"):
        mnv3ext.ops.sequential(torch.randn(1, 3, 9, 9, requires_grad=True), weights, program)


# ---------------------------------------------------------------------------------------------
# optimize: FusedSequence

def _large_and_small():
    for name in ("large", "small"):
        torch.manual_seed(0)
        m = getattr(models, f"mobilenet_v3_{name}")().eval()
        models.randomize_batchnorm_(m)
        yield name, m


def test_optimize_runs_a_whole_mobilenet_v3_as_one_sequence():
    x = torch.randn(2, 3, 96, 112)
    for name, m in _large_and_small():
        o = mnv3ext.optimize(m)
        seqs = [s for s in o.modules() if isinstance(s, FusedSequence)]
        assert len(seqs) == 1, name
        layers = len(seqs[0].layers)
        assert layers == (20 if name == "large" else 16), (name, seqs[0].layers)
        calls = [n for n in o.graph.nodes if n.op == "call_module"]
        assert [n.target for n in calls] == ["mnv3ext_sequence"], name
        assert o.mnv3ext_summary.sequences and "layers in one call" in str(o.mnv3ext_summary)
        with torch.no_grad():
            expected = m(x)
            got = o(x)
        err = float((got - expected).abs().max())
        assert err <= 1e-4 * float(expected.abs().max()), (name, err)


def test_sequence_reads_the_layers_current_weights_after_load_state_dict():
    _, a = next(_large_and_small())
    torch.manual_seed(1)
    other = models.mobilenet_v3_large().eval()
    models.randomize_batchnorm_(other, seed=3)
    oa, ob = mnv3ext.optimize(a), mnv3ext.optimize(other)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before, target = oa(x), ob(x)
        assert not torch.equal(before, target)
        oa.load_state_dict(ob.state_dict())
        assert torch.equal(oa(x), target)


def test_training_mode_refused():
    _, m = next(_large_and_small())
    o = mnv3ext.optimize(m)
    o.train()
    with pytest.raises(RuntimeError, match="inference-only"):
        o(torch.randn(1, 3, 32, 32))


def test_torchscript_compile_and_export_of_an_optimized_model(tmp_path):
    _, m = list(_large_and_small())[1]
    o = mnv3ext.optimize(m)
    x = torch.randn(1, 3, 64, 72)
    seq = o.get_submodule("mnv3ext_sequence")
    weights = [o.get_submodule(layer)._buffers[name] for layer, name in
               zip([l for l in seq.layers if l != "avgpool"], ["packed_weight"] + ["packed_weights"] * 11
                   + ["packed_weight"] * 3)]
    with torch.no_grad():
        expected = o(x)
        assert torch.equal(torch.jit.script(seq)(x, weights), expected)
        torch._dynamo.reset()
        compiled = torch.compile(o, fullgraph=True)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-6, atol=1e-6)
    exported = torch.export.export(o, (x,))
    assert any("sequential" in str(n.target) for n in exported.graph.nodes)
    path = tmp_path / "small.pt2"
    torch.export.save(exported, str(path))
    torch.save({"x": x, "expected": expected}, tmp_path / "io.pt")
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(mnv3ext.__file__)))
    code = f"""
        import torch, mnv3ext
        io = torch.load({str(tmp_path / 'io.pt')!r})
        out = torch.export.load({str(path)!r}).module()(io["x"])
        assert torch.equal(out, io["expected"]), float((out - io["expected"]).abs().max())
        print("ok")
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tempfile.gettempdir(),
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": package_parent})
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_check_reports_every_layer_of_a_sequence_and_catches_a_wrong_sequence():
    _, m = list(_large_and_small())[1]
    x = torch.randn(1, 3, 64, 64)
    o = mnv3ext.optimize(m)
    report = mnv3ext.check(m, x, optimized=o)
    kinds = [layer.kind for layer in report.layers]
    assert report.ok, str(report)
    assert kinds.count("block") == 11 and kinds.count("sequence") == 1 and kinds.count("linear") == 2, kinds
    seq = o.get_submodule("mnv3ext_sequence")
    last = len(seq.program) - 3
    assert seq.program[last:] == [6, 1000, CODE["none"]]  # the classifier's last linear
    seq.program[last + 2] = CODE["relu"]  # a wrong program: the sequence no longer computes the layers
    report = mnv3ext.check(m, x, optimized=o)
    assert not report.ok
    assert [layer.name for layer in report.layers if not layer.ok] == ["mnv3ext_sequence"], str(report)


def test_deepcopy_and_pickle_keep_the_sequence_reading_its_own_model(tmp_path):
    """The sequence holds plain references to its layers: a copy's sequence must read the copy."""
    import copy
    _, m = list(_large_and_small())[1]
    o = mnv3ext.optimize(m)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        before = o(x)
        c = copy.deepcopy(o)
        stem = c.get_submodule("features.0.0")
        stem.load_state_dict({k: v * 2 for k, v in stem.state_dict().items()})
        assert not torch.equal(c(x), before), "the copy's sequence still reads the original's weights"
        assert torch.equal(o(x), before), "changing the copy changed the original"
        torch.save(c, tmp_path / "model.pt")
        loaded = torch.load(tmp_path / "model.pt", weights_only=False)
        assert torch.equal(loaded(x), c(x))
        loaded.get_submodule("features.0.0").load_state_dict(o.get_submodule("features.0.0").state_dict())
        assert torch.equal(loaded(x), before), "the loaded model's sequence does not read its own layers"


def test_fused_sequence_revalidates_when_the_input_layout_or_a_weight_changes():
    """FusedSequence reuses the plan it validated last; a new input size / layout / batch or a
    replaced weight tensor must not run that plan."""
    _, m = list(_large_and_small())[1]
    o = mnv3ext.optimize(m)
    seq = o.get_submodule("mnv3ext_sequence")
    g = torch.Generator().manual_seed(11)
    xs = [torch.randn(1, 3, 64, 64, generator=g), torch.randn(2, 3, 40, 56, generator=g),
          torch.randn(1, 3, 64, 64, generator=g).contiguous(memory_format=CL), torch.randn(0, 3, 64, 64)]
    with torch.no_grad():
        for _ in range(2):
            for x in xs:
                assert torch.equal(o(x), mnv3ext.ops.sequential(x, seq._weights(), seq.program)), tuple(x.shape)
        stem = o.get_submodule("features.0.0")
        before = o(xs[0])
        stem.packed_weight = stem.packed_weight * 2  # a new tensor: the sequence must read it
        assert torch.equal(o(xs[0]), mnv3ext.ops.sequential(xs[0], seq._weights(), seq.program))
        assert not torch.equal(o(xs[0]), before)


def test_fused_sequence_validates_a_replaced_weight_of_another_layout():
    """The module's reused plan holds for the weight tensors it validated: a packed weight replaced
    by one of another size must raise naming it (not be read out of bounds), and a
    non-contiguous replacement must be read as its values."""
    _, m = list(_large_and_small())[1]
    o = mnv3ext.optimize(m)
    x = torch.randn(1, 3, 48, 48)
    stem = o.get_submodule("features.0.0")
    good = stem.packed_weight
    with torch.no_grad():
        expected = o(x)
        stem.packed_weight = good[:-16].clone()
        with pytest.raises(ValueError, match=r"weights\[0\]"):
            o(x)
        stem.packed_weight = torch.stack([good, torch.full_like(good, float("nan"))], 1)[:, 0]
        assert not stem.packed_weight.is_contiguous()
        for _ in range(2):  # the second call reuses the validated plan, which must copy it again
            assert torch.equal(o(x), expected)


def test_direct_call_path_keeps_module_call_semantics(monkeypatch):
    """In plain eager mode an optimized classifier's call goes straight to its sequence's
    validated plan (no Module.__call__ machinery); hooks, grad mode, an edited graph and an edited
    program must still be honoured, and results equal the op's."""
    _, m = list(_large_and_small())[1]
    o = mnv3ext.optimize(m)
    seq = o.get_submodule("mnv3ext_sequence")
    x = torch.randn(1, 3, 48, 48)
    expected = mnv3ext.ops.sequential(x, seq._weights(), seq.program)
    forwards = []
    real_forward = FusedSequence.forward
    monkeypatch.setattr(FusedSequence, "forward", lambda self, *a, **k: forwards.append(1) or real_forward(self, *a, **k))
    with torch.no_grad():
        assert torch.equal(o(x), expected)
        assert forwards, "the first call validates through forward"
        forwards.clear()
        assert torch.equal(o(x), expected) and not forwards, "a repeated plain call skips forward"
        for module in (o, seq):
            seen = []
            pre = module.register_forward_pre_hook(lambda mod, args: seen.append("pre"))
            post = module.register_forward_hook(lambda mod, args, out: seen.append("post") or out * 2)
            assert torch.equal(o(x), expected * 2) and seen == ["pre", "post"], type(module).__name__
            pre.remove()
            post.remove()
        glob = torch.nn.modules.module.register_module_forward_hook(lambda mod, args, out: None)
        forwards.clear()
        o(x)
        assert forwards, "a global hook takes Module.__call__"
        glob.remove()
    with pytest.raises(RuntimeError, match="inference-only"):
        o(x.clone().requires_grad_())
    with torch.no_grad():
        program = list(seq.program)
        seq.program[-1] = mnv3ext.ops._CODES["relu"]  # the classifier's activation: the plan must follow
        assert torch.equal(o(x), torch.relu(expected))
        seq.program[:] = program
        out = next(n for n in o.graph.nodes if n.op == "output")
        with o.graph.inserting_before(out):
            neg = o.graph.call_function(torch.neg, (out.args[0],))
        out.args = (neg,)
        o.recompile()
        assert torch.equal(o(x), -expected)
