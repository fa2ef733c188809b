"""Time edgesqueeze.compat on the digits example and the Model-Zoo light models (checker + onnxruntime proof included).

Run from the repository root: python benchmarks/bench_compat.py
"""
import time, os, sys, onnx
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))  # random weights
from edgesqueeze.model import load_model, convert_opset
from edgesqueeze.compat import downgrade_opset, make_target_compatible
from random_weights import materialize_random_weights
d = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light")
rows = []
def run(name, m, fn):
    t = time.perf_counter(); out, rep = fn(m); dt = time.perf_counter() - t
    v = rep.get("verification") or {}
    rows.append((name, len(m.graph.node), dt, v.get("max_rel")))
m = load_model("examples/digits/digits_cnn.onnx")
run("digits_cnn 18->13/IR8 (tx2)", m, lambda m: make_target_compatible(m, "tx2"))
run("digits_cnn 18->17/IR8 (xavier-nx)", m, lambda m: make_target_compatible(m, "xavier-nx"))
run("digits_cnn 18->9", m, lambda m: downgrade_opset(m, 9))
for n in ["squeezenet", "inception_v1", "shufflenet", "densenet121", "resnet50"]:
    m13 = convert_opset(materialize_random_weights(load_model(f"{d}/light_{n}.onnx")), 13)
    run(f"{n} 13->9 (after 9->13)", m13, lambda m: downgrade_opset(m, 9))
print("| model | nodes | seconds (incl. checker + 2 onnxruntime runs) | max rel err |")
print("|---|---:|---:|---:|")
for r in rows: print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]} |")
