"""Horizontal fusion: sibling layers that read the same tensor become one wider layer followed by ``Split``.

Sibling ``Conv`` nodes (group 1, same strides/pads/dilations/kernel, constant weights) are merged by
concatenating their weights and biases along the output channels (Inception branches). Only siblings followed
by the same element-wise activation (or by none) merge, and that activation then runs once before the
``Split``: a Split between a layer and its activation would undo the layer+activation fusion. Sibling ``MatMul`` with
constant 2-D weights, and ``Gemm`` with the same ``alpha``/``transA``/``transB`` and constant weights, are merged
along the output columns (attention Q/K/V projections). The ``Split`` writes the original output tensors, so
names and consumers do not change.

``fuse_horizontal_padded`` additionally merges convolutions whose only difference is the kernel size, by
zero-padding the smaller kernels, where that is exact: the same output grid (stride, dilation 1, and pads that
grow by exactly the kernel growth on each side). It trades FLOPs for fewer launches, so it is not on by default.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx_graphsurgeon as gs

from ._graph import attr_list, const, const_info, new_const, new_var
from .registry import register


def _conv_key(node: gs.Node, padded: bool) -> Optional[tuple]:
    if node.op != "Conv" or len(node.inputs) < 2 or int(node.attrs.get("group", 1)) != 1:
        return None
    w = const_info(node.inputs[1])
    if w is None or w.ndim < 3 or node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return None
    if len(node.inputs) > 2 and node.inputs[2].name and const_info(node.inputs[2]) is None:
        return None
    rank = w.ndim - 2
    strides = tuple(attr_list(node, "strides", (1,) * rank))
    dil = tuple(attr_list(node, "dilations", (1,) * rank))
    pads = tuple(attr_list(node, "pads", (0,) * 2 * rank))
    if padded:
        if any(d != 1 for d in dil):
            return None
        # the output grid is fixed by stride and (pad_begin - k//2 offset, pad_end - ...); group by it
        centre = tuple(pads[i] - (w.shape[2 + i] - 1) / 2 for i in range(rank)) + \
            tuple(pads[rank + i] - (w.shape[2 + i] - 1) / 2 for i in range(rank))
        return ("conv", w.dtype.str, w.shape[1], strides, centre)
    return ("conv", w.dtype.str, w.shape[1:], strides, dil, pads)


def _gemm_key(node: gs.Node) -> Optional[tuple]:
    if node.op == "MatMul" and len(node.inputs) == 2:
        w = const_info(node.inputs[1])
        if w is not None and w.ndim == 2:
            return ("matmul", w.dtype.str, w.shape[0])
    if node.op == "Gemm" and len(node.inputs) >= 2:
        w = const_info(node.inputs[1])
        c = const_info(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else np.zeros(1)
        if w is None or c is None or w.ndim != 2 or c.ndim > 1:
            return None
        trans_b = int(node.attrs.get("transB", 0))
        return ("gemm", w.dtype.str, w.shape[1] if trans_b else w.shape[0], float(node.attrs.get("alpha", 1.0)),
                int(node.attrs.get("transA", 0)), trans_b)
    return None


def _pad_kernel(w: np.ndarray, pads: List[int], target: Tuple[int, ...], centre_pads: List[int]) -> np.ndarray:
    rank = w.ndim - 2
    widths = [(0, 0), (0, 0)]
    for i in range(rank):
        before = centre_pads[i] - pads[i]
        widths.append((before, target[i] - w.shape[2 + i] - before))
    return np.pad(w, widths)


def _merge_convs(graph, group: List[gs.Node], ctx, padded: bool) -> Tuple[gs.Node, List[int], int]:
    weights = [const(n.inputs[1]) for n in group]
    rank = weights[0].ndim - 2
    target = tuple(max(w.shape[2 + i] for w in weights) for i in range(rank))
    big = next(n for n, w in zip(group, weights) if tuple(w.shape[2:]) == target)
    big_pads = attr_list(big, "pads", (0,) * 2 * rank)
    if padded:
        weights = [_pad_kernel(w, attr_list(n, "pads", (0,) * 2 * rank), target, big_pads)
                   for n, w in zip(group, weights)]
    biases = []
    for n, w in zip(group, weights):
        b = const(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2].name else None
        biases.append(np.zeros(w.shape[0], w.dtype) if b is None else np.asarray(b, w.dtype).reshape(-1))
    attrs = dict(big.attrs)
    attrs["kernel_shape"] = list(target)
    attrs["pads"] = big_pads
    base = f"{group[0].name or 'conv'}_hfused"
    x = group[0].inputs[0]
    merged_out = new_var(ctx, f"{base}_out", None)
    merged_out.dtype = group[0].outputs[0].dtype
    merged = gs.Node("Conv", ctx.unique(base), attrs=attrs,
                     inputs=[x, new_const(ctx, f"{base}_w", np.concatenate(weights, 0)),
                             new_const(ctx, f"{base}_b", np.concatenate(biases, 0))],
                     outputs=[merged_out])
    return merged, [w.shape[0] for w in weights], 1


def _merge_gemms(graph, group: List[gs.Node], ctx) -> Tuple[gs.Node, List[int], int]:
    base = f"{group[0].name or group[0].op.lower()}_hfused"
    x = group[0].inputs[0]
    weights = [const(n.inputs[1]) for n in group]
    out = new_var(ctx, f"{base}_out", None)
    out.dtype = group[0].outputs[0].dtype
    if group[0].op == "MatMul":
        sizes = [w.shape[1] for w in weights]
        node = gs.Node("MatMul", ctx.unique(base),
                       inputs=[x, new_const(ctx, f"{base}_w", np.concatenate(weights, 1))], outputs=[out])
        return node, sizes, -1
    trans_b = int(group[0].attrs.get("transB", 0))
    sizes = [w.shape[0] if trans_b else w.shape[1] for w in weights]
    biases = []
    for n, w, size in zip(group, weights, sizes):
        beta = float(n.attrs.get("beta", 1.0))
        c = const(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2].name else np.zeros(1, w.dtype)
        biases.append((np.broadcast_to(np.asarray(c, np.float64).reshape(-1), (size,)) * beta).astype(w.dtype))
    attrs = dict(group[0].attrs)
    attrs["beta"] = 1.0
    node = gs.Node("Gemm", ctx.unique(base), attrs=attrs,
                   inputs=[x, new_const(ctx, f"{base}_w", np.concatenate(weights, 0 if trans_b else 1)),
                           new_const(ctx, f"{base}_b", np.concatenate(biases, 0))], outputs=[out])
    return node, sizes, 1


def _split(graph, merged: gs.Node, sizes: List[int], axis: int, outputs, ctx) -> gs.Node:
    x = merged.outputs[0]
    if ctx.opset >= 13:
        split = gs.Node("Split", ctx.unique(f"{merged.name}_split"), attrs={"axis": axis},
                        inputs=[x, new_const(ctx, f"{merged.name}_sizes", np.array(sizes, np.int64))],
                        outputs=list(outputs))
    else:
        split = gs.Node("Split", ctx.unique(f"{merged.name}_split"), attrs={"axis": axis, "split": sizes},
                        inputs=[x], outputs=list(outputs))
    return split


def _fuse(graph, ctx, padded: bool):
    tensors = [t for t in graph.tensors().values() if len(t.outputs) > 1]
    for x in tensors:
        groups: Dict[tuple, List[gs.Node]] = {}
        for node in x.outputs:
            if not node.inputs or node.inputs[0] is not x or len(node.outputs) != 1:
                continue
            key = _conv_key(node, padded) or (None if padded else _gemm_key(node))
            if key is not None:
                # siblings merge only with siblings followed by the same activation: a Split between a layer and
                # its activation would cost the layer+activation fusion that TensorRT and onnxruntime make
                key = key + (_epilogue(graph, node),)
            if key is not None and node not in groups.get(key, []):
                groups.setdefault(key, []).append(node)
        for key, group in groups.items():
            if len(group) < 2:
                continue
            if padded and len({tuple(const_info(n.inputs[1]).shape[2:]) for n in group}) < 2:
                continue  # same kernels: the plain pass handles them
            if padded and not _exact_padding(group):
                continue
            merged, sizes, axis = (_merge_convs(graph, group, ctx, padded) if key[0] == "conv"
                                   else _merge_gemms(graph, group, ctx))
            acts = _shared_activation(graph, group)
            names = [n.name or n.op for n in group] + [a.name or a.op for a in acts]
            outputs = [a.outputs[0] for a in acts] if acts else [n.outputs[0] for n in group]
            for n in group + acts:
                n.outputs.clear()
                n.inputs.clear()
            graph.nodes.append(merged)
            if acts:  # the same activation on every branch: apply it once, before the Split
                act = acts[0]
                act_out = new_var(ctx, f"{merged.name}_{act.op.lower()}_out", merged.outputs[0])
                graph.nodes.append(gs.Node(act.op, ctx.unique(f"{merged.name}_{act.op.lower()}"),
                                           attrs=dict(act.attrs), inputs=[merged.outputs[0]], outputs=[act_out]))
                merged = graph.nodes[-1]
            graph.nodes.append(_split(graph, merged, sizes, axis, outputs, ctx))
            kind = "horizontal:" + ("padded_" if padded else "") + key[0]
            ctx.record(kind, names)
    return graph


_POINTWISE = ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Softplus")


def _epilogue(graph, node: gs.Node) -> Optional[tuple]:
    """(op, attributes) of the element-wise activation that alone reads ``node``'s output, else None."""
    out = node.outputs[0]
    if any(t is out for t in graph.outputs) or len(out.outputs) != 1:
        return None
    act = out.outputs[0]
    if act.op not in _POINTWISE or len(act.inputs) != 1 or len(act.outputs) != 1:
        return None
    return (act.op, tuple(sorted((k, str(v)) for k, v in act.attrs.items())))


def _shared_activation(graph, group: List[gs.Node]) -> List[gs.Node]:
    """The activation nodes when every sibling feeds only the same element-wise activation (same attributes)."""
    acts = []
    for n in group:
        out = n.outputs[0]
        if any(t is out for t in graph.outputs) or len(out.outputs) != 1:
            return []
        act = out.outputs[0]
        if act.op not in _POINTWISE or len(act.inputs) != 1 or len(act.outputs) != 1:
            return []
        acts.append(act)
    if len({(a.op, tuple(sorted((k, str(v)) for k, v in a.attrs.items()))) for a in acts}) != 1:
        return []
    return acts


def _exact_padding(group: List[gs.Node]) -> bool:
    """Zero-padding is exact when each smaller kernel sits at an integer offset inside the largest one."""
    weights = [const_info(n.inputs[1]) for n in group]
    rank = weights[0].ndim - 2
    target = tuple(max(w.shape[2 + i] for w in weights) for i in range(rank))
    if not any(tuple(w.shape[2:]) == target for w in weights):
        return False
    big = next(n for n, w in zip(group, weights) if tuple(w.shape[2:]) == target)
    big_pads = attr_list(big, "pads", (0,) * 2 * rank)
    for n, w in zip(group, weights):
        pads = attr_list(n, "pads", (0,) * 2 * rank)
        for i in range(rank):
            before, after = big_pads[i] - pads[i], big_pads[rank + i] - pads[rank + i]
            if before < 0 or after < 0 or before + after + w.shape[2 + i] != target[i]:
                return False
    return True


@register("fuse_horizontal", description="merge sibling Conv/Gemm/MatMul nodes reading the same tensor into one "
                                         "node + Split")
def fuse_horizontal(graph, ctx):
    """Merge sibling layers with identical geometry that read the same tensor."""
    return _fuse(graph, ctx, padded=False)


@register("fuse_horizontal_padded", default=False,
          description="merge sibling convolutions that differ only in kernel size by exact zero-padding "
                      "(more FLOPs; off by default)")
def fuse_horizontal_padded(graph, ctx):
    """Merge sibling convolutions of different kernel sizes where zero-padding the kernels is exact."""
    return _fuse(graph, ctx, padded=True)
