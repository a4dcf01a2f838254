"""What ``optimize`` did, as a printable object."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

__all__ = ["OptimizeSummary"]


@dataclass
class OptimizeSummary:
    """Attached to every optimized model as ``model.mnv3ext_summary``; ``print()`` it.

    ``fused_depthwise`` / ``fused_se`` / ``pointwise`` / ``dense_conv`` / ``linear`` /
    ``pooling``: (name in the optimized model, what it replaced). ``residual_fused``: 1x1
    convolutions that add the block's residual in their epilogue; ``se_folded``: (SE gate, 1x1
    convolution) pairs whose gate multiplies the convolution's input inside the GEMM.
    ``left_on_pytorch``: (where, why) for every compute layer still run by PyTorch. ``blocks``:
    (name, config) of each inverted-residual block run as one op; ``sequences``: (name, what)
    of each run of layers executed as one ``sequential`` op (the layers keep their names); the counts of the layers above
    are of the layers fused first, most of which these blocks then absorb. ``folded_batchnorm``: BatchNorms folded into the preceding convolution.
    ``unfused``: (where, what, reason) for every candidate left as it was. ``fallback``:
    modules whose ``forward`` could not be traced by ``torch.fx``; they were kept as they are
    and only their children were rewritten (patterns spanning them are not fused).
    """

    fused_depthwise: List[Tuple[str, str]] = field(default_factory=list)
    fused_se: List[Tuple[str, str]] = field(default_factory=list)
    pointwise: List[Tuple[str, str]] = field(default_factory=list)
    dense_conv: List[Tuple[str, str]] = field(default_factory=list)
    linear: List[Tuple[str, str]] = field(default_factory=list)
    pooling: List[Tuple[str, str]] = field(default_factory=list)
    residual_fused: List[str] = field(default_factory=list)
    se_folded: List[Tuple[str, str]] = field(default_factory=list)
    left_on_pytorch: List[Tuple[str, str]] = field(default_factory=list)
    blocks: List[Tuple[str, str]] = field(default_factory=list)
    sequences: List[Tuple[str, str]] = field(default_factory=list)
    folded_batchnorm: List[str] = field(default_factory=list)
    unfused: List[Tuple[str, str, str]] = field(default_factory=list)
    fallback: List[Tuple[str, str]] = field(default_factory=list)
    ops_before: int = 0
    ops_after: int = 0
    memory_format: Optional[str] = None

    @property
    def ops_removed(self) -> int:
        return self.ops_before - self.ops_after

    def merge(self, other: "OptimizeSummary", prefix: str = "") -> None:
        p = f"{prefix}." if prefix else ""
        self.fused_depthwise += [(p + a, b) for a, b in other.fused_depthwise]
        self.fused_se += [(p + a, b) for a, b in other.fused_se]
        self.pointwise += [(p + a, b) for a, b in other.pointwise]
        self.dense_conv += [(p + a, b) for a, b in other.dense_conv]
        self.linear += [(p + a, b) for a, b in other.linear]
        self.pooling += [(p + a, b) for a, b in other.pooling]
        self.residual_fused += [p + a for a in other.residual_fused]
        self.se_folded += [(p + a, p + b) for a, b in other.se_folded]
        self.left_on_pytorch += [(p + a, b) for a, b in other.left_on_pytorch]
        self.blocks += [(p + a, b) for a, b in other.blocks]
        self.sequences += [(p + a, b) for a, b in other.sequences]
        self.folded_batchnorm += [p + a for a in other.folded_batchnorm]
        self.unfused += [(p + a, b, c) for a, b, c in other.unfused]
        self.fallback += [(p + a, b) for a, b in other.fallback]
        self.ops_before += other.ops_before
        self.ops_after += other.ops_after

    def __str__(self) -> str:
        lines = [
            "mnv3ext.optimize summary",
            f"  inverted-residual blocks as one op: {len(self.blocks)}",
            f"  layer sequences as one op   : {len(self.sequences)}"
            + "".join(f"\n    - {name}: {what}" for name, what in self.sequences),
            f"  fused depthwise conv+BN+act : {len(self.fused_depthwise)}",
            f"  fused squeeze-excite        : {len(self.fused_se)}",
            f"  BatchNorms folded into convs: {len(self.folded_batchnorm)}",
            f"  1x1 convs (+act) on mnv3ext : {len(self.pointwise)}"
            f" ({len(self.residual_fused)} with the residual add fused,"
            f" {len(self.se_folded)} with the SE gate folded in)",
            f"  dense convs (stem) / linear / global pools on mnv3ext: {len(self.dense_conv)} / "
            f"{len(self.linear)} / {len(self.pooling)}",
            f"  graph ops: {self.ops_before} -> {self.ops_after} ({self.ops_removed} removed)",
            f"  memory format               : {self.memory_format or 'unchanged'}",
        ]
        if self.fallback:
            lines.append(f"  not traceable by torch.fx (kept, children optimized): {len(self.fallback)}")
            lines += [f"    - {name}: {why}" for name, why in self.fallback]
        if self.left_on_pytorch:
            lines.append(f"  compute layers left on PyTorch: {len(self.left_on_pytorch)}")
            lines += [f"    - {where}: {why}" for where, why in self.left_on_pytorch]
        else:
            lines.append("  compute layers left on PyTorch: none")
        if self.unfused:
            lines.append(f"  left unfused: {len(self.unfused)}")
            lines += [f"    - {where} [{what}]: {why}" for where, what, why in self.unfused]
        else:
            lines.append("  left unfused: none")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"OptimizeSummary(fused_depthwise={len(self.fused_depthwise)}, fused_se={len(self.fused_se)}, "
                f"folded_batchnorm={len(self.folded_batchnorm)}, pointwise={len(self.pointwise)}, "
                f"dense_conv={len(self.dense_conv)}, linear={len(self.linear)}, pooling={len(self.pooling)}, "
                f"left_on_pytorch={len(self.left_on_pytorch)}, blocks={len(self.blocks)}, "
                f"sequences={len(self.sequences)}, "
                f"ops_removed={self.ops_removed}, unfused={len(self.unfused)}, fallback={len(self.fallback)})")
