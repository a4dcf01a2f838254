"""A saved optimized model loads and runs on a machine with another ISA (simulated with MNV3EXT_ISA).

The models are optimized (weights packed) under each available ISA in this process and saved
both whole (``torch.save(model)``) and as a ``state_dict``. A fresh process per ISA, started
with ``MNV3EXT_ISA=<isa>``, loads every model saved under a *different* ISA and checks:

* the whole-module load runs and gives exactly (bit for bit) what a model computes on that ISA
  in the saving process, and agrees within rounding with the output on the saving ISA;
* a freshly optimized model with other weights, after ``load_state_dict``, gives the same;
* every fused depthwise module's packed weights equal a fresh pack of its weights (the packed
  layout is ISA-independent).
"""
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch

import mnv3ext
from mnv3ext.models import mobilenet_v3_small, randomize_batchnorm_

ISAS = mnv3ext.available_isas()
FORMATS = {"cl": torch.channels_last, "nchw": torch.contiguous_format}

LOADER = r"""
import sys, torch, mnv3ext
from mnv3ext.models import mobilenet_v3_small, randomize_batchnorm_
from mnv3ext.nn import FusedConv2d, FusedInvertedResidual, FusedLinear, FusedPointwiseConv2d
torch.set_num_threads(1)
folder, isa = sys.argv[1], sys.argv[2]
assert mnv3ext.current_isa() == isa, (mnv3ext.current_isa(), isa)
io = torch.load(f"{folder}/io.pt")
checked = 0
with torch.no_grad():
    for saved_under in io["isas"]:
        if saved_under == isa:
            continue
        for fmt, memory_format in (("cl", torch.channels_last), ("nchw", torch.contiguous_format)):
            whole = torch.load(f"{folder}/model_{saved_under}_{fmt}.pt", weights_only=False)
            fresh = mnv3ext.optimize(randomize_batchnorm_(mobilenet_v3_small(), seed=99).eval(),
                                     memory_format=memory_format)
            fresh.load_state_dict(torch.load(f"{folder}/state_{saved_under}_{fmt}.pt"))
            for name, model in (("whole", whole), ("state_dict", fresh)):
                model.eval()
                blocks = [m for m in model.modules() if isinstance(m, FusedInvertedResidual)]
                assert len(blocks) == 11, "not every block fused"
                for m in blocks:
                    repacked = torch.ops.mnv3ext.pack_inverted_residual(
                        m.expand_weight, m.expand_bias, m.dw_weight, m.dw_bias, m.se_fc1_weight, m.se_fc1_bias,
                        m.se_fc2_weight, m.se_fc2_bias, m.project_weight, m.project_bias, m.config)
                    assert torch.equal(m.packed_weights, repacked), f"{name}: stale packed block weights"
                gemms = [m for m in model.modules() if isinstance(m, (FusedPointwiseConv2d, FusedLinear))]
                assert gemms and all(torch.equal(m.packed_weight, torch.ops.mnv3ext.pack_gemm_weight(m.weight, m.bias))
                                     for m in gemms), f"{name}: stale packed GEMM weights"
                (stem,) = [m for m in model.modules() if isinstance(m, FusedConv2d)]
                assert torch.equal(stem.packed_weight, stem._pack()), f"{name}: stale packed stem weights"
                out = model(io["x"])
                assert torch.equal(out, io["expected"][fmt][isa]), f"{name} saved under {saved_under} ({fmt})"
                torch.testing.assert_close(out, io["expected"][fmt][saved_under], rtol=1e-4, atol=1e-4)
                checked += 1
print("checked", checked)
"""


@pytest.mark.skipif(len(ISAS) < 2, reason="needs two ISA paths")
def test_saved_optimized_model_runs_under_every_other_isa(tmp_path):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = randomize_batchnorm_(mobilenet_v3_small(), seed=5).eval()
        x = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(0))
        expected = {fmt: {} for fmt in FORMATS}
        with torch.no_grad():
            for saved_under in ISAS:
                for fmt, memory_format in FORMATS.items():
                    with mnv3ext.use_isa(saved_under):
                        model = mnv3ext.optimize(base, memory_format=memory_format)
                    torch.save(model, tmp_path / f"model_{saved_under}_{fmt}.pt")
                    torch.save(model.state_dict(), tmp_path / f"state_{saved_under}_{fmt}.pt")
                    outs = {}
                    for isa in ISAS:
                        with mnv3ext.use_isa(isa):
                            outs[isa] = model(x)
                    for isa, out in outs.items():  # packing does not depend on the ISA
                        if isa in expected[fmt]:
                            assert torch.equal(out, expected[fmt][isa])
                        expected[fmt][isa] = out
        torch.save({"x": x, "expected": expected, "isas": ISAS}, tmp_path / "io.pt")
    finally:
        torch.set_num_threads(previous)

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(mnv3ext.__file__)))
    procs = {
        isa: subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(LOADER), str(tmp_path), isa],
            cwd=tempfile.gettempdir(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": package_parent, "MNV3EXT_ISA": isa, "OMP_NUM_THREADS": "1"},
        )
        for isa in ISAS
    }
    for isa, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"MNV3EXT_ISA={isa}:\n{stderr[-3000:]}"
        assert stdout.split()[-1] == str(2 * 2 * (len(ISAS) - 1)), stdout
