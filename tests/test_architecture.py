"""The package's shape: imports run one way (DESIGN.md), no import cycles, no ImportError fallbacks around
our own modules, no function over 80 lines. Every check reads the sources with ``ast``; nothing is imported."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgesqueeze"

# Bottom to top (DESIGN.md, "Imports run one way"). A module may import its own layer and the layers below.
# Keys are dotted prefixes below ``edgesqueeze``; the longest matching prefix decides a module's layer.
LAYERS = [
    ("", "errors", "fileio", "_lazy", "precision", "protowire"),  # "" is the root package (__version__, the
    # exceptions); precision: the Precision enum, which devices and every stage name; protowire: the protobuf wire
    # format (model.py writes models weight by weight)
    ("devices",),
    ("model",),
    ("data", "datareader", "imagedata", "ortutil", "export", "numerics"),  # numerics: rounding vs breakage
    ("plugins",),
    ("compat",),
    ("backends",),
    ("passes", "quant", "compress", "inspect", "dla"),
    ("bench",),
    ("bundle",),
    ("compare",),  # a model or a bundle against another: reads bundles
    ("deploy",),
    ("pipeline",),
    ("cli", "__main__"),
]

# Upward imports that remain in files other branches are changing at the same time; the lead removes each
# entry once that branch is merged. Entries: (file relative to the repository, imported module).
KNOWN_VIOLATIONS = set()

# ``except ImportError`` is for optional third-party extras (and one optional build product) only:
# (file, module imported in the guarded ``try``) -> why that module may be missing.
IMPORT_GUARDS = {
    ("edgesqueeze/imagedata.py", "PIL.Image"): "Pillow, the images extra",
    ("edgesqueeze/bench/nvml.py", "pynvml"): "nvidia-ml-py, the nvml extra (the probe reports itself unavailable)",
    ("edgesqueeze/deploy/fleet.py", "tomllib"): "standard library from Python 3.11; tomli before",
    ("edgesqueeze/deploy/device_probe.py", "importlib"):  # from importlib import metadata
        "runs on the device's Python, which may be 3.6 (no importlib.metadata)",
    ("edgesqueeze/quant/histogram.py", "edgesqueeze.quant._histc"):
        "the optional C histogram kernel, built only where a compiler is present",
    ("edgesqueeze/plugins/check.py", "nvidia"): "the nvidia-* pip CUDA wheels",
    ("edgesqueeze/plugins/sass.py", "nvidia"): "the nvidia-cuda-cuobjdump / nvdisasm pip wheels",
    ("edgesqueeze/plugins/check.py", "cuda.bindings"): "cuda-python, for NVRTC",
    ("edgesqueeze/plugins/check.py", "cuda"): "cuda-python < 12.6 layout",
}
# Guards around our own modules in files another branch is rewriting now; the lead removes them after merging.
KNOWN_IMPORT_GUARDS = set()

MAX_FUNCTION_LINES = 80
# Functions over the limit in files other branches own right now: "file:function" (the lead trims this).
KNOWN_LONG: set = set()


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield path, ".".join(parts), is_pkg, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _exists(dotted: str) -> bool:
    """True for a module of ours: a .py file, a package, or a C extension's source (``quant/_histc.c``)."""
    p = ROOT.joinpath(*dotted.split("."))
    return any(p.with_suffix(s).is_file() for s in (".py", ".c")) or (p / "__init__.py").is_file()


def _imports(module: str, is_pkg: bool, tree: ast.AST):
    """Yield (line, imported module) for every import in ``tree``, module-level and inside functions."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            for alias in node.names:  # ``from . import x`` imports the submodule x when there is one
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if _exists(sub) else base


def _layer(module: str) -> int:
    rest = module[len("edgesqueeze"):].lstrip(".")
    best, best_len = None, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (rest == name or rest.startswith(name + ".") or name == "") and len(name) > best_len:
                best, best_len = index, len(name)
    if best is None or (best_len == 0 and rest):
        raise AssertionError(f"edgesqueeze.{rest} has no layer: add it to LAYERS in {Path(__file__).name}")
    return best


def _layer_name(module: str) -> str:
    return "/".join(n or "edgesqueeze" for n in LAYERS[_layer(module)])


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _graph():
    edges = {}
    for path, module, is_pkg, tree in _modules():
        edges[module] = (path, [(line, target) for line, target in _imports(module, is_pkg, tree)
                                if target == "edgesqueeze" or target.startswith("edgesqueeze.")])
    return edges


def test_every_module_has_a_layer():
    for _path, module, _pkg, _tree in _modules():
        _layer(module)


def test_imports_run_one_way():
    upward, seen = [], set()
    for module, (path, imports) in _graph().items():
        for line, target in imports:
            if _layer(target) <= _layer(module):
                continue
            seen.add((_rel(path), target))
            if (_rel(path), target) not in KNOWN_VIOLATIONS:
                upward.append(f"{_rel(path)}:{line}: imports {target} ({_layer_name(target)} is above "
                              f"{_layer_name(module)})")
    assert not upward, "imports against the layer order (DESIGN.md):\n" + "\n".join(upward)
    stale = KNOWN_VIOLATIONS - seen
    assert not stale, f"KNOWN_VIOLATIONS lists imports that are gone; remove them: {sorted(stale)}"


def test_device_side_code_is_self_contained():
    """What runs on the device (Python 3.6, no edgesqueeze installed) imports nothing of ours."""
    graph = _graph()
    for module in ("edgesqueeze.deploy.device_runner", "edgesqueeze.deploy.device_probe"):
        path, imports = graph[module]
        assert not imports, f"{_rel(path)} imports our modules: {imports}"


def _cycles(edges):
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = _graph()
    edges = {m: sorted({t for _line, t in imps if t in graph and t != m}) for m, (_p, imps) in graph.items()}
    # A package's __init__ importing its own submodules is how packages work, not a cycle to report.
    edges = {m: [t for t in ts if not (graph[m][0].name == "__init__.py" and t.startswith(m + "."))]
             for m, ts in edges.items()}
    found = []
    for comp in _cycles(edges):
        lines = [f"  {m} -> {t} ({_rel(graph[m][0])}:{line})" for m in comp
                 for line, t in graph[m][1] if t in comp and t != m]
        found.append(" <-> ".join(comp) + "\n" + "\n".join(lines))
    assert not found, "import cycles (move what both sides need below both):\n" + "\n".join(found)


def _guarded_modules(handler_try: ast.Try, module: str, is_pkg: bool):
    body = ast.Module(body=handler_try.body, type_ignores=[])
    return [target for _line, target in _imports(module, is_pkg, body)]


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError") for k in kinds)


def test_import_error_only_for_third_party_extras():
    bad = []
    for path, module, is_pkg, tree in _modules():
        rel = _rel(path)
        if rel == "edgesqueeze/_lazy.py" or rel in KNOWN_IMPORT_GUARDS:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Try) or not any(_catches_import_error(h) for h in node.handlers):
                continue
            guarded = _guarded_modules(node, module, is_pkg)  # a try without imports guards a call, not one
            unlisted = [m for m in guarded if (rel, m) not in IMPORT_GUARDS]
            if unlisted:
                bad.append(f"{rel}:{node.lineno}: except ImportError around {', '.join(unlisted)}")
    assert not bad, ("try/except ImportError is for listed third-party extras only (IMPORT_GUARDS); import our "
                     "own modules plainly, and use edgesqueeze._lazy.require for an extra:\n" + "\n".join(bad))


def test_functions_are_short():
    long_ones, seen = [], set()
    for path, _module, _pkg, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = node.end_lineno - node.lineno + 1  # from ``def`` (click's decorators not counted)
            if length <= MAX_FUNCTION_LINES:
                continue
            key = f"{_rel(path)}:{node.name}"
            seen.add(key)
            if key not in KNOWN_LONG:
                long_ones.append(f"{key} (line {node.lineno}): {length} lines")
    assert not long_ones, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long_ones)
    stale = KNOWN_LONG - seen
    assert not stale, f"KNOWN_LONG lists functions that are short now; remove them: {sorted(stale)}"


def test_the_checks_catch_what_they_look_for():
    assert _layer("edgesqueeze.bench.stats") > _layer("edgesqueeze.model")
    assert _layer("edgesqueeze.cli.bench") > _layer("edgesqueeze.pipeline.stages")
    assert _layer("edgesqueeze.datareader") == _layer("edgesqueeze.data")
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    tree = ast.parse("try:\n    from . import x\nexcept ImportError:\n    x = None\n")
    assert _guarded_modules(tree.body[0], "edgesqueeze.data", False) == ["edgesqueeze"]
