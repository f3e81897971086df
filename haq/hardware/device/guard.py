"""What a device refuses to run, checked before onnxruntime sees a model, and how a refusal is
reported: with the agent's own error code and a message of its own, never the runtime's text
(a runtime error that echoes data is a way to read it out).

External data is the hole this closes: a ``TensorProto`` may say its bytes live in a file
(``data_location = EXTERNAL`` with a ``location``), and older onnxruntime versions read any
path, so a model could carry ``/etc/passwd`` into its outputs or error messages. haq's models
are self-contained, so every tensor anywhere in a model (initializers, sparse initializers,
``Constant`` and other tensor attributes, subgraphs of ``If`` / ``Loop`` / ``Scan``, functions,
training graphs) must hold its data inline. The check walks the protobuf wire format itself, so
it needs neither the ``onnx`` package nor trust in any parser but its own.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from haq.core.errors import DeviceError

MAX_NESTING = 64
DEFAULT_MAX_INPUT_ELEMENTS = 1 << 26  # 256 MiB of float32 per input

# message -> {field number: message it holds}, for every path from ModelProto to a TensorProto
# (field numbers of onnx.proto).
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "function": {7: "node", 11: "attribute"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_TENSOR_EXTERNAL_DATA = 13
_TENSOR_DATA_LOCATION = 14
_NODE_OP_TYPE = 4
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class Refusal(DeviceError):
    """A model the device will not (or cannot) measure.

    ``code`` is the agent's wire error code; ``public`` is the part of the message that may be
    sent to a client (haq's own words); the full text (``str``) adds the runtime's detail, for
    local runs and the agent's log only.
    """

    def __init__(self, code: str, public: str, detail: str = "") -> None:
        super().__init__(f"{public}: {detail}" if detail else public)
        self.code = code
        self.public = public


def check_model(model: bytes) -> None:
    """Refuse ONNX bytes that are not a well-formed protobuf, nest messages absurdly deep, keep
    any tensor's data outside the model, or hold ``EPContext`` nodes (which name files)."""
    if not isinstance(model, (bytes, bytearray)) or not model:
        raise Refusal("bad_model", "a model must be non-empty ONNX protobuf bytes")
    stack: list[tuple[memoryview, str, int]] = [(memoryview(bytes(model)), "model", 0)]
    while stack:
        buf, kind, depth = stack.pop()
        if depth > MAX_NESTING:
            raise Refusal("bad_model", f"cannot load the model: messages nest deeper than {MAX_NESTING} levels")
        children = _CHILDREN[kind]
        for number, wire, value in _fields(buf):
            if kind == "tensor" and number in (_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION):
                if number == _TENSOR_EXTERNAL_DATA or wire != _VARINT or value != 0:
                    raise Refusal(
                        "bad_model",
                        "the model keeps tensor data outside itself (external data), which haq never reads; "
                        "embed the weights in the model",
                    )
            elif kind == "node" and number == _NODE_OP_TYPE and wire == _LEN and bytes(value) == b"EPContext":
                raise Refusal("bad_model", "EPContext nodes (precompiled blobs kept in files) are not measured")
            elif wire == _LEN and number in children:
                stack.append((value, children[number], depth + 1))


def _fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of one message: an int for varints, a memoryview for
    length-delimited fields, None for fixed-size ones. Groups and bad encodings are refused."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _malformed("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == _LEN:
            length, pos = _varint(buf, pos)
            if length > end - pos:
                raise _malformed("a field runs past the end")
            yield number, wire, buf[pos : pos + length]
            pos += length
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise _malformed("a field runs past the end")
            yield number, wire, None
        else:
            raise _malformed(f"wire type {wire}")


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    for i in range(pos, min(pos + 10, len(buf))):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    raise _malformed("a truncated or overlong varint")


def _malformed(what: str) -> Refusal:
    return Refusal("bad_model", f"cannot load the model: not ONNX protobuf ({what})")


def check_input_elements(name: str, shape: Sequence[int], limit: int) -> None:
    """Refuse an input whose declared shape (symbolic dimensions already 1) holds more than
    ``limit`` elements, before anything is allocated for it."""
    elements = 1
    for dim in shape:
        elements = min(elements * max(int(dim), 0), limit + 1)  # stays a small number to print
    if elements > limit:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise Refusal("too_large", f"input {shown!r} declares more than {limit} elements, the most this device accepts per input")
