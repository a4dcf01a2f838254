"""Random bad calls of every entry point raise Python exceptions and never crash the interpreter.

The calls are generated and run in a subprocess per batch (``tests/fuzz_bad_input_worker.py``
describes what is generated), so a segfault or abort fails that batch's test with the last
call's description instead of killing pytest. Calls per batch: ``MNV3EXT_BAD_INPUT_CALLS``
(default 500; 6 batches).
"""
import json
import os
import subprocess
import sys
import tempfile

import pytest

import mnv3ext

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_bad_input_worker.py")
CALLS = int(os.environ.get("MNV3EXT_BAD_INPUT_CALLS", "500"))
SEEDS = [11, 12, 13, 14, 15, 16]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_bad_calls_raise_and_never_crash(seed):
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(mnv3ext.__file__)))
    env = {**os.environ, "PYTHONPATH": package_parent, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, WORKER, str(seed), str(CALLS)], cwd=tempfile.gettempdir(),
                            capture_output=True, text=True, env=env, timeout=900)
    last_call = result.stderr.strip().splitlines()[-15:]
    assert result.returncode == 0, (
        f"worker died (return code {result.returncode}); last lines:\n" + "\n".join(last_call)
    )
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"seed {seed}: {counts['calls']} calls, {counts['returned']} returned, raised {counts['raised']}, slow {counts['slow']}")
    assert not counts["unexpected"], "\n".join(counts["unexpected"][:20])
    assert counts["calls"] >= CALLS * 0.9
    assert sum(counts["raised"].values()) >= counts["calls"] * 0.6  # mostly genuinely bad calls
