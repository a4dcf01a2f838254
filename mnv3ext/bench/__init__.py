"""Benchmark tooling shared by ``python -m mnv3ext`` (bench, bench-ops, info, report) and bench/.

* :mod:`.timing`    -- interleaved round-robin timing of several callables (medians, p10, p90).
* :mod:`.bandwidth` -- single-thread copy bandwidth at a given working-set size (roofline).
* :mod:`.machine`   -- CPU / ISA / version header.
* :mod:`.opcases`, :mod:`.op_table` -- the per-op (depthwise, SE) cases and the issue-2 table.
* :mod:`.models`, :mod:`.backends`, :mod:`.per_layer` -- whole-model benchmark pieces.
* :mod:`.schema`, :mod:`.report`, :mod:`.cli` -- JSON schema, merging runs, the command line.

Optional runtimes (onnxruntime, openvino, matplotlib) are imported lazily, only when used.
"""
from .bandwidth import copy_bandwidth, copy_time
from .machine import format_header, machine_info
from .timing import Stats, interleaved, summarize

__all__ = ["Stats", "copy_bandwidth", "copy_time", "format_header", "interleaved", "machine_info", "summarize"]
