"""Conv -> (BatchNorm) -> activation chains, recorded as fusion groups.

TensorRT (and onnxruntime's CPU kernels) fuse a convolution with the activation after it; ONNX has no standard
op for the pair, so this pass changes nothing in the graph: it names each group in the report (after BN folding,
the BN is already part of the Conv) so that users see what the engine will fuse.
"""
from __future__ import annotations

from ._graph import ACTIVATION_OPS, producer, sole_consumer
from .registry import register

_LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _is_swish(graph, node) -> bool:
    """``x * Sigmoid(x)`` (SiLU / swish)."""
    if node.op != "Mul" or len(node.inputs) != 2:
        return False
    for a, b in ((0, 1), (1, 0)):
        sig = producer(node.inputs[b])
        if sig is not None and sig.op == "Sigmoid" and sig.inputs[0] is node.inputs[a]:
            return True
    return False


@register("fuse_conv_activation", description="record Conv/Gemm -> (BatchNorm) -> activation chains as fusion "
                                              "groups (report only)")
def fuse_conv_activation(graph, ctx):
    """Record layer + activation groups in the report; the graph is unchanged."""
    for layer in [n for n in graph.nodes if n.op in _LAYERS]:
        group = [layer]
        out = layer.outputs[0]
        nxt = sole_consumer(graph, out)
        if nxt is not None and nxt.op == "BatchNormalization":
            group.append(nxt)
            out = nxt.outputs[0]
            nxt = sole_consumer(graph, out)
        acts = []
        if nxt is not None and nxt.op in ACTIVATION_OPS:
            acts.append(nxt)
        elif len(out.outputs) == 2 and not any(t is out for t in graph.outputs):
            # swish: the tensor feeds Sigmoid and the Mul that multiplies by it
            muls = [n for n in out.outputs if _is_swish(graph, n)]
            if muls:
                acts.append(muls[0])
        if acts:
            ops = "+".join(n.op for n in group) + "+" + ("Swish" if acts[0].op == "Mul" else acts[0].op)
            ctx.record(f"conv_activation:{ops}", group + acts)
    return graph
