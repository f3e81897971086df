"""The drift sentinel (step 8): a fixed model re-timed during a batch, so a machine that
changed speed half-way shows up as spread in its medians instead of in the results."""

from __future__ import annotations

import numpy as np


def sentinel_model(size: int = 256) -> bytes:
    """A fixed fp32 MatMul + Relu used as the drift sentinel (needs the ``onnx`` package)."""
    import onnx  # only hosts build the sentinel; a device agent receives it as bytes
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "haq_sentinel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, size])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, size])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model.SerializeToString()
