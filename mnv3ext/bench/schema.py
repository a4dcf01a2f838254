"""The JSON written by ``python -m mnv3ext bench --json FILE`` (and read by ``report``).

Versioned: ``"schema": "mnv3ext-bench"`` and ``"schema_version": 2``. A reader must check both;
fields may be added in a later minor change without a version bump, never removed or renamed.
Version 2 (this one) changed how the whole-model latencies are timed -- backends in alternating
blocks (per block and backend one warm call, then ``settings.block_calls`` timed calls) instead of
call-by-call round-robin; ``settings.rounds`` counts blocks, ``settings.runs`` timed calls per
backend -- made ``onnxruntime`` ORT's defaults (spinning pool; ``onnxruntime-nospin`` the old
setting) and added ONNX Runtime's per-block profiler times to ``per_layer``. ``validate`` and
``report`` still read version 1 files.
All times are milliseconds unless the key says seconds. Numbers that do not exist (a skipped
backend's latency, the speedup when eager was not run, top-1 agreement of a one-class output)
are ``null``.

Top level
    ``schema``, ``schema_version``, ``created`` (UTC, ISO 8601), ``label`` (free text or null),
    ``machine`` (see ``MACHINE_SCHEMA``: CPU, cores, ISA detected / in use, versions, threads),
    ``settings`` (the command's options), ``results`` (one entry per requested backend, in the
    order requested), ``per_layer`` (null unless ``--per-layer``).
``results[i]``
    ``backend``; ``status`` ``ok`` | ``skipped`` (optional runtime or feature absent) | ``error``
    (it failed: message in ``reason``); ``latency_ms`` {median, p10, p90, mean, min, max, n}
    over the timed rounds; ``images_per_second`` = batch / median; ``speedup_vs_eager`` = eager
    median / this median; ``max_abs_err`` / ``max_rel_err`` (over max |eager output|) /
    ``top1_agreement`` against the eager output on the same input; ``setup_seconds``
    (optimize / export / session / compilation incl. the first call), ``compile_seconds``
    (first call of a ``torch.compile``d model), ``details`` (backend-specific facts).
``settings`` (version 2 adds)
    ``timing`` ``"alternating-blocks"``; ``block_calls`` (timed calls per backend per block).
``per_layer``
    ``backends``; ``unavailable`` {backend: reason}; ``rows`` [{``index``, ``name``,
    ``median_ms`` {backend: ms}, ``p10_ms``, ``p90_ms``, ``notes`` {backend: text}}]: each block
    timed on its own on the input it sees inside the model (stem, every inverted residual, the
    last 1x1 conv, the head); ``total_ms`` {backend: sum of the medians}. Version 2, when an
    ONNX Runtime backend ran: rows' ``ort_us`` {ort backend: µs} (median over profiled runs of the
    kernel times of the nodes charged to the block) and ``ort_nodes`` {ort backend: count};
    ``ort`` {ort backend: {``runs``, ``total_us`` (sum of the rows' medians), ``run_total_us``,
    ``nodes``, ``unassigned``}}. Added later (no version bump), when ``optimize`` runs the whole
    model as one ``sequential`` op: rows' ``in_model_us`` (median over runs of the wall time of
    the steps charged to the block, timed inside that op: as ORT's profiler times, inside the
    whole model) and ``in_model`` {``runs``, ``total_us`` (sum of the rows' medians),
    ``run_total_us`` (median over runs of all steps)}.
"""
from __future__ import annotations

import math
from typing import Any, Dict

__all__ = ["SCHEMA_ID", "SCHEMA_VERSION", "READABLE_VERSIONS", "BENCH_SCHEMA", "MACHINE_SCHEMA", "validate", "clean_floats",
           "SchemaError"]

SCHEMA_ID = "mnv3ext-bench"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)

_num = {"type": "number"}
_num_or_null = {"type": ["number", "null"]}
_str_or_null = {"type": ["string", "null"]}
_int_or_null = {"type": ["integer", "null"]}

MACHINE_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "required": ["cpu_model", "arch", "logical_cores", "isa_detected", "isa_in_use", "threads",
                 "torch_version", "numpy_version", "mnv3ext_version", "python_version"],
    "properties": {
        "cpu_model": {"type": "string", "description": "CPU name (/proc/cpuinfo, Arm part number, sysctl)"},
        "arch": {"type": "string", "description": "platform.machine(), e.g. x86_64, aarch64"},
        "system": {"type": "string"},
        "logical_cores": _int_or_null,
        "physical_cores": _int_or_null,
        "usable_cores": _int_or_null,
        "isa_detected": {"type": "string", "description": "mnv3ext.best_isa()"},
        "isa_in_use": {"type": "string", "description": "mnv3ext.current_isa() during the run"},
        "isa_available": {"type": "array", "items": {"type": "string"}},
        "isa_forced": _str_or_null,
        "threads": {"type": "integer", "minimum": 1},
        "python_version": {"type": "string"},
        "torch_version": {"type": "string"},
        "numpy_version": {"type": "string"},
        "mnv3ext_version": {"type": "string"},
        "onnxruntime_version": _str_or_null,
        "openvino_version": _str_or_null,
    },
}

LATENCY_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "required": ["median", "p10", "p90", "n"],
    "properties": {"median": _num, "p10": _num, "p90": _num, "mean": _num, "min": _num, "max": _num,
                   "n": {"type": "integer", "minimum": 1}, "number": {"type": "integer", "minimum": 1}},
}

RESULT_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "required": ["backend", "status", "reason", "latency_ms"],
    "properties": {
        "backend": {"type": "string"},
        "status": {"enum": ["ok", "skipped", "error"]},
        "reason": _str_or_null,
        "latency_ms": {"oneOf": [LATENCY_SCHEMA, {"type": "null"}]},
        "images_per_second": _num_or_null,
        "speedup_vs_eager": _num_or_null,
        "max_abs_err": _num_or_null,
        "max_rel_err": _num_or_null,
        "top1_agreement": _num_or_null,
        "setup_seconds": _num_or_null,
        "compile_seconds": _num_or_null,
        "details": {"type": "object"},
    },
    "allOf": [
        {"if": {"properties": {"status": {"const": "ok"}}},
         "then": {"properties": {"latency_ms": LATENCY_SCHEMA, "reason": {"type": "null"}}}},
        {"if": {"properties": {"status": {"enum": ["skipped", "error"]}}},
         "then": {"properties": {"latency_ms": {"type": "null"}, "reason": {"type": "string"}}}},
    ],
}

_ms_map = {"type": "object", "additionalProperties": _num}

PER_LAYER_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "required": ["backends", "rows", "total_ms"],
    "properties": {
        "backends": {"type": "array", "items": {"type": "string"}},
        "unavailable": {"type": "object", "additionalProperties": {"type": "string"}},
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "name", "median_ms"],
                "properties": {
                    "index": {"type": "integer", "minimum": 0},
                    "name": {"type": "string"},
                    "median_ms": _ms_map, "p10_ms": _ms_map, "p90_ms": _ms_map,
                    "notes": {"type": "object", "additionalProperties": {"type": "string"}},
                    "ort_us": {"type": "object", "additionalProperties": _num_or_null},
                    "ort_nodes": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
                    "in_model_us": _num_or_null,
                },
            },
        },
        "total_ms": _ms_map,
        "ort": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["runs", "total_us", "nodes", "unassigned"],
            "properties": {"runs": {"type": "integer", "minimum": 0}, "total_us": _num_or_null,
                           "run_total_us": _num_or_null, "nodes": {"type": "integer", "minimum": 0},
                           "unassigned": {"type": "integer", "minimum": 0}}}},
        "in_model": {"type": "object", "required": ["runs", "total_us", "run_total_us"],
                     "properties": {"runs": {"type": "integer", "minimum": 0}, "total_us": _num_or_null,
                                    "run_total_us": _num_or_null}},
    },
}

SETTINGS_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "required": ["model", "width", "batch", "size", "threads", "warmup", "runs", "seconds", "backends",
                 "per_layer", "seed"],
    "properties": {
        "model": {"enum": ["large", "small", "lraspp"]},
        "width": {"type": "number", "exclusiveMinimum": 0},
        "batch": {"type": "integer", "minimum": 1},
        "size": {"type": "integer", "minimum": 1},
        "threads": {"type": "integer", "minimum": 1},
        "warmup": {"type": "integer", "minimum": 0},
        "runs": _int_or_null,
        "seconds": _num_or_null,
        "rounds": {"type": "integer", "minimum": 0, "description": "timed rounds actually run"},
        "backends": {"type": "array", "items": {"type": "string"}},
        "per_layer": {"type": "boolean"},
        "seed": {"type": "integer"},
        "isa": _str_or_null,
        "timing": {"enum": ["alternating-blocks"]},
        "block_calls": {"type": "integer", "minimum": 1},
    },
}

BENCH_SCHEMA: Dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:mnv3ext:bench-result:v2",
    "title": "mnv3ext bench result",
    "description": __doc__,
    "type": "object",
    "required": ["schema", "schema_version", "created", "machine", "settings", "results", "per_layer"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "schema_version": {"enum": list(READABLE_VERSIONS)},
        "created": {"type": "string"},
        "label": _str_or_null,
        "machine": MACHINE_SCHEMA,
        "settings": SETTINGS_SCHEMA,
        "results": {"type": "array", "items": RESULT_SCHEMA},
        "per_layer": {"oneOf": [PER_LAYER_SCHEMA, {"type": "null"}]},
    },
}


class SchemaError(ValueError):
    pass


def clean_floats(obj: Any) -> Any:
    """NaN / inf -> None, recursively (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_floats(v) for v in obj]
    return obj


def validate(doc: Any) -> None:
    """Raise SchemaError unless ``doc`` is a bench result of a readable schema version (1 or 2).

    Uses the ``jsonschema`` package when installed (full check), else checks the identity,
    version and top-level keys only."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
        raise SchemaError(f"not an mnv3ext bench result (expected \"schema\": \"{SCHEMA_ID}\")")
    if doc.get("schema_version") not in READABLE_VERSIONS:
        raise SchemaError(f"schema_version {doc.get('schema_version')!r} is not supported "
                          f"(this mnv3ext reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    try:
        import jsonschema
    except ImportError:
        missing = [k for k in BENCH_SCHEMA["required"] if k not in doc]
        if missing:
            raise SchemaError(f"missing keys: {', '.join(missing)}")
        return
    try:
        jsonschema.validate(doc, BENCH_SCHEMA)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "<root>"
        raise SchemaError(f"{where}: {e.message}") from None
