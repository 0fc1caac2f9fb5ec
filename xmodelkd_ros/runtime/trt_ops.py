"""ONNX operators that TensorRT's ONNX parser (onnx-tensorrt, TensorRT 10.x) imports natively.

Kept as data so a CPU-only test can reject an exported graph that would fail to
build on the vehicle. The list follows onnx-tensorrt's operator support matrix
(``docs/operators.md``) for the ops a segmentation network can plausibly emit;
it deliberately omits ops the parser supports only with restrictions we do not
want to depend on (e.g. data-dependent shapes).
"""

from __future__ import annotations

#: Supported by the TensorRT 10 ONNX parser without plugins.
TENSORRT_ONNX_OPS: frozenset[str] = frozenset(
    {
        "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan",
        "Atanh", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Celu", "Clip",
        "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh",
        "CumSum", "DepthToSpace", "Div", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand",
        "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
        "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "HardSigmoid",
        "HardSwish", "Identity", "InstanceNormalization", "LayerNormalization", "LeakyRelu",
        "Less", "LessOrEqual", "Log", "LogSoftmax", "MatMul", "Max", "MaxPool", "Mean",
        "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pad", "Pow", "PRelu", "Range",
        "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape",
        "Resize", "Round", "Selu", "Shape", "Sigmoid", "Sign", "Sin", "Sinh", "Size",
        "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt",
        "Squeeze", "Sub", "Sum", "Tan", "Tanh", "Tile", "Transpose", "Trilu", "Unsqueeze",
        "Where", "Xor",
    }
)  # fmt: skip

#: Ops that mean data-dependent shapes or control flow crept into the graph: the
#: design keeps sorting, hashing and searching outside the network.
FORBIDDEN_OPS: frozenset[str] = frozenset(
    {"NonZero", "Unique", "TopK", "ScatterND", "ScatterElements", "Loop", "If", "Scan"}
)


def unsupported_ops(model: object) -> dict[str, list[str]]:
    """Op types of an ``onnx.ModelProto`` (subgraphs included) that TensorRT would reject.

    Returns ``{"unsupported": [...], "forbidden": [...]}``, both empty for a good graph.
    """
    ops: set[str] = set()

    def walk(graph: object) -> None:
        for node in graph.node:  # type: ignore[attr-defined]
            if node.domain not in ("", "ai.onnx"):
                ops.add(f"{node.domain}::{node.op_type}")
            else:
                ops.add(node.op_type)
            for attr in node.attribute:
                if attr.g is not None and len(attr.g.node):
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)  # type: ignore[attr-defined]
    return {
        "unsupported": sorted(ops - TENSORRT_ONNX_OPS),
        "forbidden": sorted(ops & FORBIDDEN_OPS),
    }
