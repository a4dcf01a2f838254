import pytest

import mnv3ext


@pytest.fixture(params=mnv3ext.available_isas())
def isa(request):
    """Runs the test once per ISA path this machine has (scalar, avx2, avx512, neon)."""
    with mnv3ext.use_isa(request.param):
        yield request.param
