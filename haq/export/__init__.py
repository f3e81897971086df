"""QDQ ONNX export of a model under a quantization policy, checked against onnxruntime's optimized graph."""

from haq.export.api import ExportedModel, ExportOptions, export_policy, run_onnx
from haq.export.plan import (
    ExportError,
    LayerPlan,
    Realization,
    plan_layer,
    realizable,
    supported_precisions,
)
from haq.export.verify import (
    Kernel,
    mismatches,
    optimized_graph,
    realized_kernels,
    session_options,
)

__all__ = [
    "ExportError",
    "ExportOptions",
    "ExportedModel",
    "Kernel",
    "LayerPlan",
    "Realization",
    "export_policy",
    "mismatches",
    "optimized_graph",
    "plan_layer",
    "realizable",
    "realized_kernels",
    "run_onnx",
    "session_options",
    "supported_precisions",
]
