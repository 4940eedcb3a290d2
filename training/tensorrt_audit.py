"""Check every operator of an exported ONNX graph against TensorRT's ONNX operator support.

The table is transcribed from onnx-tensorrt's docs/operators.md (branch 10.1-GA, "TensorRT 10.0
supports operators in the inclusive range of opset 9 to opset 20") and its importer
onnxOpImporters.cpp, restricted to the operators a student export can contain. Restrictions that
the document states are checked on the graph itself (axes given as constants, Resize modes and no
antialias, 2D MaxPool without an Indices output, 4D GridSample, the scatter reduction). An operator
that is not in the table is reported as "unknown": audit it by hand before trusting an engine.

Written here rather than taken from a library: TensorRT's own parser (the authoritative check) needs
TensorRT and a CUDA GPU, which no machine of this project has.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import onnx
from onnx import ModelProto, NodeProto

SUPPORTED = "supported"
PLUGIN = "plugin"
UNSUPPORTED = "unsupported"
UNKNOWN = "unknown"

# op -> restriction stated by onnx-tensorrt docs/operators.md (10.1-GA); "" when none
TENSORRT_OPS: dict[str, str] = {
    "Add": "", "Cast": "", "Concat": "", "Constant": "sparse_value/value_string(s) unsupported",
    "ConstantOfShape": "", "Conv": "", "Div": "", "Equal": "", "Exp": "", "Expand": "", "Flatten": "",
    "Gather": "", "GatherElements": "", "Gemm": "", "GridSample": "input must be 4D", "Identity": "",
    "MatMul": "", "Max": "", "MaxPool": "2D or 3D only; Indices output unsupported; dilations all ones",
    "Min": "", "Mul": "", "Neg": "", "Pad": "axes must be an initializer", "Range": "", "Reciprocal": "",
    "ReduceMax": "axes must be an initializer", "ReduceMean": "axes must be an initializer",
    "ReduceSum": "axes must be an initializer", "Relu": "", "Reshape": "",
    "Resize": "modes nearest/linear; no antialias; half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, "
              "asymmetric or align_corners",
    "ScatterElements": "reduction none in TensorRT core; add/mul/max/min via the ScatterElements plugin "
                       "(libnvinfer_plugin; INT64 indices only, no BF16)",
    "Shape": "", "Sigmoid": "", "Slice": "axes must be an initializer", "Softmax": "", "Split": "",
    "Sqrt": "", "Squeeze": "axes must be an initializer", "Sub": "", "Tanh": "",
    "TopK": "sorted must be 1; K < 3840", "Transpose": "", "Unsqueeze": "axes must be a constant tensor",
    "Where": "",
}
NOT_SUPPORTED: frozenset[str] = frozenset({"Unique", "SequenceAt", "SequenceConstruct", "SplitToSequence",
                                           "ConcatFromSequence", "MaxRoiPool", "MaxUnpool", "Multinomial"})
RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
AXES_INPUT = {"Slice": 3, "ReduceSum": 1, "ReduceMax": 1, "ReduceMean": 1, "Squeeze": 1, "Unsqueeze": 1, "Pad": 3}


@dataclass(frozen=True)
class OpFinding:
    """One operator type of the graph: how many nodes, TensorRT's support and what was checked."""

    op: str
    count: int
    status: str
    note: str


def _attr(node: NodeProto, name: str, default: object) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _problems(node: NodeProto, constants: set[str], ranks: dict[str, int]) -> list[str]:
    """Violations of the documented restrictions by one node."""
    out: list[str] = []
    op = node.op_type
    if op in AXES_INPUT and len(node.input) > AXES_INPUT[op] and node.input[AXES_INPUT[op]]:
        if node.input[AXES_INPUT[op]] not in constants:
            out.append(f"{node.name}: axes input {node.input[AXES_INPUT[op]]!r} is not a constant")
    if op == "Resize":
        mode = _attr(node, "mode", b"nearest")
        coord = _attr(node, "coordinate_transformation_mode", b"half_pixel")
        mode, coord = (v.decode() if isinstance(v, bytes) else str(v) for v in (mode, coord))
        if mode not in ("nearest", "linear") or coord not in RESIZE_COORDS or _attr(node, "antialias", 0):
            out.append(f"{node.name}: Resize mode={mode} coordinate_transformation_mode={coord} "
                       f"antialias={_attr(node, 'antialias', 0)}")
    if op == "MaxPool":
        kernel = list(_attr(node, "kernel_shape", []))  # type: ignore[call-overload]
        dil = list(_attr(node, "dilations", []))  # type: ignore[call-overload]
        if len(node.output) > 1 and node.output[1] or len(kernel) not in (2, 3) or any(d != 1 for d in dil):
            out.append(f"{node.name}: MaxPool kernel {kernel}, dilations {dil}, outputs {list(node.output)}")
    if op == "GridSample" and ranks.get(node.input[0], 4) != 4:
        out.append(f"{node.name}: GridSample input has rank {ranks[node.input[0]]}, TensorRT needs 4")
    return out


def audit_tensorrt_ops(model: ModelProto) -> list[OpFinding]:
    """One finding per operator type of `model` (shape inference gives the ranks the checks need)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in list(graph.value_info) + list(graph.input)
             if v.type.tensor_type.HasField("shape")}
    elem = {v.name: v.type.tensor_type.elem_type for v in list(graph.value_info) + list(graph.input)}
    counts = Counter(n.op_type for n in graph.node)
    problems: dict[str, list[str]] = {}
    reductions: dict[str, set[str]] = {}
    for node in graph.node:
        problems.setdefault(node.op_type, []).extend(_problems(node, constants, ranks))
        if node.op_type == "ScatterElements":
            red = _attr(node, "reduction", b"none")
            reductions.setdefault(node.op_type, set()).add(red.decode() if isinstance(red, bytes) else str(red))
            int64 = onnx.TensorProto.INT64
            if red not in (b"none", "none") and elem.get(node.input[1], int64) != int64:
                problems[node.op_type].append(f"{node.name}: indices are not INT64 (the plugin needs INT64)")
    findings = []
    for op, count in sorted(counts.items()):
        issues = problems.get(op, [])
        if op in NOT_SUPPORTED:
            status, note = UNSUPPORTED, "not supported by onnx-tensorrt"
        elif op not in TENSORRT_OPS:
            status, note = UNKNOWN, "not in the audited table: check onnx-tensorrt's operators.md"
        elif issues:
            status, note = UNSUPPORTED, "; ".join(issues[:3])
        elif op == "ScatterElements" and reductions.get(op, {"none"}) - {"none"}:
            status, note = PLUGIN, (f"reduction {'/'.join(sorted(reductions[op]))}: " + TENSORRT_OPS[op])
        else:
            status, note = SUPPORTED, TENSORRT_OPS[op] or "no restriction"
        findings.append(OpFinding(op, count, status, note))
    return findings


def format_audit(findings: list[OpFinding]) -> str:
    """A readable table of the findings."""
    rows = [f"{'ONNX op':<18}{'nodes':>6}  {'TensorRT 10':<12}note"]
    rows += [f"{f.op:<18}{f.count:>6}  {f.status:<12}{f.note}" for f in findings]
    return "\n".join(rows)
