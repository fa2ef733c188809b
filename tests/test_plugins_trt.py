"""GPU and TensorRT tests of the kernels and plugins (they skip themselves without a GPU / TensorRT).

* gpu: the real kernels, compiled with nvcc for this GPU, against onnxruntime running the nodes' ONNX functions,
  and the tiled dwsep kernel against the one-thread-per-output reference kernel on a layer of realistic size.
* trt: the plugin library built with CMake, loaded into TensorRT, and a model with both custom nodes compared
  with onnxruntime (FP32 and FP16).
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from custom_ops import make_dwsep_model, make_sparse_conv_model
from onnx import helper

from edgesqueeze.ortutil import run_model
from edgesqueeze.plugins import emulate
from edgesqueeze.plugins.dwsep import dwsep_function, make_dwsep_node
from edgesqueeze.plugins.ops import DOMAIN
from edgesqueeze.plugins.sparse import make_sparse_conv_node, sparse_conv_function
from edgesqueeze.plugins.sparse_formats import sparse_conv_inputs


def _rel_err(ref, act):
    ref, act = np.asarray(ref, np.float64), np.asarray(act, np.float64)
    assert ref.shape == act.shape
    return float(np.abs(ref - act).max() / max(np.abs(ref).max(), 1e-12))


@pytest.fixture(scope="module")
def gpu_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("esq_gpu")
    emulate.build_gpu_harness(path)
    return path


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float16, 1e-2)], ids=["fp32", "fp16"])
@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "reference"])
def test_gpu_dwsep_matches_onnxruntime(dtype, tol, tiled, gpu_cache):
    rng = np.random.default_rng(0)
    for (n, c, h, w, m, k, s, p, d, act) in [(2, 37, 9, 7, 40, 3, 2, 1, 1, "relu"), (1, 13, 1, 1, 5, 5, 1, 2, 1, "clip"),
                                             (1, 6, 11, 10, 19, 5, 1, 4, 2, "hard_swish")]:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        w_dw, b_dw = rng.standard_normal((c, 1, k, k)).astype(dtype) / k, rng.standard_normal(c).astype(dtype)
        w_pw = (rng.standard_normal((m, c, 1, 1)) / np.sqrt(c)).astype(dtype)
        b_pw = rng.standard_normal(m).astype(dtype)
        attrs = dict(strides=(s, s), pads=(p, p, p, p), dilations=(d, d), dw_activation=act, dw_alpha=0.0,
                     dw_beta=6.0, pw_activation="sigmoid")
        ref = run_model(make_dwsep_model(x.shape, w_dw, b_dw, w_pw, b_pw, dtype=dtype, **attrs), {"x": x})["y"]
        got = emulate.emulate_dwsep(x, w_dw, b_dw, w_pw, b_pw, tiled=tiled, device="gpu", cache_dir=gpu_cache,
                                    **attrs)
        assert _rel_err(ref, got) <= tol


@pytest.mark.gpu
def test_gpu_tiled_dwsep_matches_reference_kernel_on_a_real_layer(gpu_cache):
    """MobileNet-v1 block 7 sizes: the fast kernel against the simple one, both on the GPU."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 256, 28, 28)).astype(np.float32)
    w_dw, b_dw = rng.standard_normal((256, 1, 3, 3)).astype(np.float32) / 3, rng.standard_normal(256).astype(np.float32)
    w_pw = (rng.standard_normal((512, 256, 1, 1)) / 16).astype(np.float32)
    b_pw = rng.standard_normal(512).astype(np.float32)
    attrs = dict(strides=(2, 2), pads=(1, 1, 1, 1), dw_activation="clip", dw_alpha=0.0, dw_beta=6.0,
                 pw_activation="clip", pw_alpha=0.0, pw_beta=6.0)
    fast = emulate.emulate_dwsep(x, w_dw, b_dw, w_pw, b_pw, tiled=True, device="gpu", cache_dir=gpu_cache, **attrs)
    slow = emulate.emulate_dwsep(x, w_dw, b_dw, w_pw, b_pw, tiled=False, device="gpu", cache_dir=gpu_cache, **attrs)
    assert _rel_err(slow, fast) <= 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["2:4", "csr"])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float16, 1e-2)], ids=["fp32", "fp16"])
def test_gpu_sparse_matches_onnxruntime(fmt, dtype, tol, gpu_cache):
    rng = np.random.default_rng(2)
    m, c, k = 33, 24, 3
    w = rng.standard_normal((m, c, k, k)) / np.sqrt(c * k * k)
    if fmt == "2:4":
        g = w.transpose(0, 2, 3, 1).reshape(m, k, k, c // 4, 4)
        idx = np.argsort(-np.abs(g), axis=-1)[..., 2:]
        np.put_along_axis(g, idx, 0, axis=-1)
        w = g.reshape(m, k, k, c).transpose(0, 3, 1, 2)
    else:
        w[rng.random(w.shape) < 0.9] = 0
    w, b = w.astype(dtype), rng.standard_normal(m).astype(dtype)
    x = rng.standard_normal((2, c, 9, 8)).astype(dtype)
    attrs = dict(strides=(2, 1), pads=(1, 1, 1, 1), dilations=(1, 1), activation="leaky_relu", alpha=0.1, beta=0.0)
    ref = run_model(make_sparse_conv_model(x.shape, w, b, sparse_format=fmt, dtype=dtype, **attrs), {"x": x})["y"]
    got = emulate.emulate_sparse_conv(x, sparse_conv_inputs(w, fmt, dtype), b, sparse_format=fmt,
                                      kernel_shape=(k, k), device="gpu", cache_dir=gpu_cache, **attrs)
    assert _rel_err(ref, got) <= tol


# ----------------------------------------------------------------------------- TensorRT
def _both_ops_model(dtype=np.float32, seed=0):
    """x[1,8,10,10] → DepthwiseSeparableConv(3x3, relu6, 16) → SparseConv 2:4 (1x1, relu, 12) → SparseConv csr
    (3x3, pad 1, 5) → y. Returns (model with local functions, model for the plugin: no functions)."""
    rng = np.random.default_rng(seed)
    nodes, inits, functions = [], [], []

    def init(name, arr):
        inits.append(onnx.numpy_helper.from_array(np.asarray(arr, dtype=dtype), name) if arr.dtype.kind == "f"
                     else onnx.numpy_helper.from_array(arr, name))

    init("w_dw", rng.standard_normal((8, 1, 3, 3)) / 3)
    init("b_dw", rng.standard_normal(8))
    init("w_pw", rng.standard_normal((16, 8, 1, 1)) / 3)
    init("b_pw", rng.standard_normal(16))
    dw = make_dwsep_node(["x", "w_dw", "b_dw", "w_pw", "b_pw"], ["t1"], kernel_shape=(3, 3), pads=(1, 1, 1, 1),
                         dw_activation="clip", dw_alpha=0.0, dw_beta=6.0, name="dwsep", channels=8, dtype=dtype)
    nodes.append(dw)
    functions.append(dwsep_function(dw, 17))
    w24 = rng.standard_normal((12, 16, 1, 1)) / 4
    w24.reshape(12, 4, 4)[:, :, 2:] = 0
    arrays = sparse_conv_inputs(w24, "2:4", dtype)
    for k, a in arrays.items():
        init(f"s24_{k}", a)
    init("s24_b", rng.standard_normal(12))
    s24 = make_sparse_conv_node(["t1", "s24_values", "s24_metadata", "s24_b"], ["t2"], sparse_format="2:4",
                                kernel_shape=(1, 1), activation="relu", name="sparse24", dtype=dtype)
    nodes.append(s24)
    wcsr = rng.standard_normal((5, 12, 3, 3)) / 6
    wcsr[rng.random(wcsr.shape) < 0.85] = 0
    for k, a in sparse_conv_inputs(wcsr, "csr", dtype).items():
        init(f"csr_{k}", a)
    init("csr_b", rng.standard_normal(5))
    csr = make_sparse_conv_node(["t2", "csr_values", "csr_col", "csr_row_ptr", "csr_b"], ["y"], sparse_format="csr",
                                kernel_shape=(3, 3), pads=(1, 1, 1, 1), name="sparse_csr", dtype=dtype)
    nodes.append(csr)
    functions += [sparse_conv_function(s24, 17), sparse_conv_function(csr, 17)]
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(nodes, "both", [helper.make_tensor_value_info("x", elem, [1, 8, 10, 10])],
                              [helper.make_tensor_value_info("y", elem, [1, 5, 10, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                              functions=functions)
    model.ir_version = 10
    plugin = onnx.ModelProto()
    plugin.CopyFrom(model)
    del plugin.functions[:]
    for node in plugin.graph.node:
        node.overload = ""
    plugin.ir_version = 8
    for op in plugin.opset_import:   # only custom nodes remain: opset 13 keeps TensorRT 8.2's parser happy
        if op.domain == "":
            op.version = 13
    return model, plugin


def test_both_ops_model_runs_on_onnxruntime():
    model, plugin = _both_ops_model()
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(3).standard_normal((1, 8, 10, 10)).astype(np.float32)
    y = run_model(model, {"x": x})["y"]
    assert y.shape == (1, 5, 10, 10) and np.isfinite(y).all() and np.abs(y).max() > 0
    assert not plugin.functions and {n.op_type for n in plugin.graph.node} == {"DepthwiseSeparableConv", "SparseConv"}


@pytest.fixture(scope="module")
def plugin_library(tmp_path_factory):
    from edgesqueeze.plugins.build import build_library

    out = build_library(None, os.environ.get("TENSORRT_ROOT"), str(tmp_path_factory.mktemp("esq_plugins")))
    return out["library"]


def _trt_run(trt, plugin_model, x, fp16):
    import pycuda.autoinit  # noqa: F401
    import pycuda.driver as cuda

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(plugin_model.SerializeToString()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    kinds = [network.get_layer(i).type for i in range(network.num_layers)]
    assert sum(k == trt.LayerType.PLUGIN_V2 for k in kinds) == 3, kinds
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    blob = builder.build_serialized_network(network, config)
    assert blob is not None
    engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
    context = engine.create_execution_context()
    y = np.empty((1, 5, 10, 10), np.float32)
    d_x, d_y = cuda.mem_alloc(x.nbytes), cuda.mem_alloc(y.nbytes)
    cuda.memcpy_htod(d_x, x)
    if major >= 10:
        context.set_tensor_address("x", int(d_x))
        context.set_tensor_address("y", int(d_y))
        stream = cuda.Stream()
        assert context.execute_async_v3(stream.handle)
        stream.synchronize()
    else:
        bindings = [0, 0]
        bindings[engine.get_binding_index("x")] = int(d_x)
        bindings[engine.get_binding_index("y")] = int(d_y)
        assert context.execute_v2(bindings)
    cuda.memcpy_dtoh(y, d_y)
    return y


@pytest.mark.trt
@pytest.mark.parametrize("fp16,tol", [(False, 1e-5), (True, 1e-2)], ids=["fp32", "fp16"])
def test_tensorrt_plugins_match_onnxruntime(plugin_library, fp16, tol):
    from edgesqueeze._lazy import require
    from edgesqueeze.plugins.build import load_plugin_library

    trt = require("tensorrt", "the TensorRT plugin test")
    load_plugin_library(plugin_library)
    model, plugin = _both_ops_model()
    x = np.random.default_rng(4).standard_normal((1, 8, 10, 10)).astype(np.float32)
    ref = run_model(model, {"x": x})["y"]
    got = _trt_run(trt, plugin, x, fp16)
    assert _rel_err(ref, got) <= tol
