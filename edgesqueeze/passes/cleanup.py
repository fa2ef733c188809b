"""Dead-node cleanup and topological sort (the optimizer also runs this after every pass)."""
from __future__ import annotations

from .registry import register


@register("cleanup", description="remove nodes and tensors no output depends on; topological sort")
def cleanup(graph, ctx):
    """Remove dead nodes, then sort the nodes topologically."""
    before = [n.name or n.op for n in graph.nodes]
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    alive = {id(n) for n in graph.nodes}
    dead = len(before) - len(alive)
    if dead > 0:
        ctx.record("cleanup:dead_nodes", [f"{dead} nodes"])
    return graph
