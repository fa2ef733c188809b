"""TensorRT optimization profiles for models with dynamic input dimensions — decided without TensorRT.

A profile gives every dynamic input three shapes, in trtexec's words ``min``, ``opt`` and ``max``: the engine
runs any shape between ``min`` and ``max`` and is tuned for ``opt``. Here a profile is the JSON-ready mapping
``{input: {"min": dims, "opt": dims, "max": dims}}`` (the manifest's ``tensorrt.profile``, ``build --json``).

* :func:`parse_profile_flags` reads ``--min-shapes/--opt-shapes/--max-shapes`` (trtexec's
  ``name:1x3x640x640,name2:...``; only ``--opt-shapes``, or all three, as trtexec takes them);
* :func:`check_profile` holds a profile against the model's inputs (rank, fixed dims, min <= opt <= max);
* :func:`default_profile` derives the profile of every input from the model's shapes and the data's;
* :func:`shapes_spec` writes one selector back in trtexec's syntax (``--minShapes=`` ... ``--shapes=``).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Union

from ..errors import InputError
from ..model import format_shape, parse_shape

SELECTORS = ("min", "opt", "max")
DEFAULT_MAX_BATCH = 8  # a symbolic batch dimension's max when neither the user nor the data says more
Dim = Union[int, str, None]
Profile = Dict[str, Dict[str, List[int]]]


def is_dynamic(dims: Sequence[Dim]) -> bool:
    """True when a shape has a symbolic or unknown dimension (or no shape at all)."""
    return not dims or any(not isinstance(d, int) or d <= 0 for d in dims)


def dynamic_inputs(specs: Mapping[str, dict]) -> List[str]:
    """The names of the inputs of ``specs`` (:func:`~edgesqueeze.model.input_specs`) with a dynamic dimension."""
    return [name for name, spec in specs.items() if is_dynamic(spec["shape"])]


def parse_shapes_spec(text: str, flag: str = "--opt-shapes") -> Dict[str, List[int]]:
    """Parse trtexec's shape list ``images:1x3x640x640[,mask:1x640x640]`` into ``{name: dims}``.

    Raises:
        InputError: an entry without ``name:``, a bad shape, or a name given twice (the message names ``flag``).
    """
    out: Dict[str, List[int]] = {}
    for part in str(text).split(","):
        name, sep, dims = part.strip().rpartition(":")
        name = name.strip().strip("'")
        if not sep or not name:
            raise InputError(f"{flag} '{part.strip()}': expected NAME:DIMS like images:1x3x640x640")
        if name in out:
            raise InputError(f"{flag} names input '{name}' twice")
        try:
            out[name] = parse_shape(dims)
        except InputError as exc:
            raise InputError(f"{flag} {name}: {exc.message}") from exc
    return out


def parse_profile_flags(min_shapes: Optional[str] = None, opt_shapes: Optional[str] = None,
                        max_shapes: Optional[str] = None) -> Profile:
    """The profile the user asked for: per input, all three of min/opt/max, or opt alone (then min = max = opt).

    Raises:
        InputError: a bad shape list, or an input given min or max without the other two (as trtexec refuses).
    """
    given = {sel: parse_shapes_spec(text, f"--{sel}-shapes") if text else {}
             for sel, text in zip(SELECTORS, (min_shapes, opt_shapes, max_shapes))}
    profile: Profile = {}
    for name in sorted(set().union(*given.values())):
        have = [sel for sel in SELECTORS if name in given[sel]]
        if have == ["opt"]:
            profile[name] = {sel: list(given["opt"][name]) for sel in SELECTORS}
        elif have == list(SELECTORS):
            profile[name] = {sel: list(given[sel][name]) for sel in SELECTORS}
        else:
            missing = ", ".join(f"--{sel}-shapes" for sel in SELECTORS if sel not in have)
            raise InputError(f"input '{name}' needs only --opt-shapes or all of --min-shapes, --opt-shapes, "
                             f"--max-shapes (missing {missing})")
        _check_order(name, profile[name])
    return profile


def _check_order(name: str, p: Mapping[str, Sequence[int]]) -> None:
    lo, opt, hi = (list(p[sel]) for sel in SELECTORS)
    if not (len(lo) == len(opt) == len(hi)):
        raise InputError(f"min {format_shape(lo)}, opt {format_shape(opt)} and max {format_shape(hi)} differ in "
                         "rank", tensor=name)
    bad = [i for i, (a, b, c) in enumerate(zip(lo, opt, hi)) if not 0 < a <= b <= c]
    if bad:
        raise InputError(f"min {format_shape(lo)}, opt {format_shape(opt)}, max {format_shape(hi)} break "
                         f"min <= opt <= max at axis {bad[0]}", tensor=name)


def check_profile(specs: Mapping[str, dict], profile: Optional[Mapping[str, Mapping[str, Sequence[int]]]]) -> Profile:
    """Hold ``profile`` against the model's inputs ``specs`` (:func:`~edgesqueeze.model.input_specs`).

    Returns the profile as plain lists. Raises:
        InputError: an unknown input name, another rank than the model's, a fixed dimension given another value,
            or shapes out of order.
    """
    out: Profile = {}
    for name, p in (profile or {}).items():
        if name not in specs:
            raise InputError(f"the shape profile names '{name}', but the model's inputs are: {', '.join(specs)}")
        p = {sel: [int(d) for d in p[sel]] for sel in SELECTORS}
        _check_order(name, p)
        dims = specs[name]["shape"]
        if dims and len(dims) != len(p["opt"]):
            raise InputError(f"shape {format_shape(p['opt'])} has rank {len(p['opt'])}, the model's input has rank "
                             f"{len(dims)} ({format_shape(dims)})", tensor=name)
        for axis, d in enumerate(dims):
            if isinstance(d, int) and d > 0 and any(p[sel][axis] != d for sel in SELECTORS):
                raise InputError(f"axis {axis} is fixed at {d} in the model ({format_shape(dims)}), but the profile "
                                 f"gives {'/'.join(str(p[sel][axis]) for sel in SELECTORS)}", tensor=name)
        out[name] = p
    return out


def default_profile(specs: Mapping[str, dict], data_shapes: Optional[Mapping[str, Sequence[int]]] = None, *,
                    given: Optional[Mapping[str, Mapping[str, Sequence[int]]]] = None, opt_batch: int = 1,
                    max_batch: int = DEFAULT_MAX_BATCH) -> Profile:
    """The optimization profile of every input of ``specs``: the user's where ``given``, else derived.

    Fixed dimensions are fixed. A symbolic batch (axis 0) gets min 1, opt the data's batch (else ``opt_batch``)
    and max ``max(max_batch, opt)``; any other symbolic dimension takes the data's value for min, opt and max.

    Args:
        specs: ``{name: {"shape": dims}}`` with symbolic dims as names or None.
        data_shapes: ``{name: dims}`` of one real sample (the calibration or validation data), or None.
        given: the user's profile (already held against ``specs`` by :func:`check_profile`).

    Raises:
        InputError: a symbolic non-batch dimension with neither data nor a given profile.
    """
    given = check_profile(specs, given)
    out: Profile = {}
    for name, spec in specs.items():
        if name in given:
            out[name] = given[name]
            continue
        dims, data = list(spec["shape"]), (data_shapes or {}).get(name)
        if data is not None and dims and len(data) != len(dims):
            data = None  # data of another rank says nothing about this input
        p: Dict[str, List[int]] = {sel: [] for sel in SELECTORS}
        for axis, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                lo = opt = hi = d
            elif axis == 0:
                opt = int(data[0]) if data is not None else int(opt_batch)
                lo, hi = 1, max(int(max_batch), opt)
            elif data is not None:
                lo = opt = hi = int(data[axis])
            else:
                raise InputError(f"dynamic dimension '{d or '?'}' (axis {axis}) of {format_shape(dims)} has no "
                                 "value for the TensorRT optimization profile", tensor=name,
                                 hint=f"give it with --opt-shapes {name}:DIMS (or --min/--opt/--max-shapes for a "
                                      "range), or give --calib/--val data")
            for sel, v in zip(SELECTORS, (lo, opt, hi)):
                p[sel].append(v)
        out[name] = p
    return out


def dynamic_profile(specs: Mapping[str, dict], profile: Mapping[str, Mapping[str, Sequence[int]]]) -> Profile:
    """The part of ``profile`` trtexec takes: the inputs that are dynamic in the model (empty when none is)."""
    return {name: {sel: list(profile[name][sel]) for sel in SELECTORS}
            for name in dynamic_inputs(specs) if name in profile}


def spec_name(name: str) -> str:
    """An input name as trtexec's shape list takes it (quoted when it holds ``:`` or ``,``)."""
    return f"'{name}'" if (":" in name or "," in name) else name


def shapes_spec(profile: Mapping[str, Mapping[str, Sequence[int]]], selector: str) -> str:
    """One selector of ``profile`` in trtexec's syntax: ``images:1x3x640x640,mask:1x640x640`` (inputs sorted)."""
    return ",".join(f"{spec_name(name)}:{'x'.join(str(int(d)) for d in profile[name][selector])}"
                    for name in sorted(profile))


def calibration_profile(profile: Mapping[str, Mapping[str, Sequence[int]]]) -> Profile:
    """The INT8 calibration profile: one shape per input, the ``opt`` shape (trtexec's ``--optShapesCalib``
    sets min = opt = max from it; TensorRT 8.x needs one for a network with dynamic inputs)."""
    return {name: {sel: list(p["opt"]) for sel in SELECTORS} for name, p in profile.items()}


def profile_lines(profile: Mapping[str, Mapping[str, Sequence[int]]]) -> List[str]:
    """One line per input for a summary: ``images: min 1x3x320x320, opt 1x3x640x640, max 8x3x1280x1280``."""
    return [f"{name}: " + ", ".join(f"{sel} {format_shape(profile[name][sel])}" for sel in SELECTORS)
            for name in sorted(profile)]


def covering_profile(shape_sets: Sequence[Mapping[str, Sequence[int]]]) -> Profile:
    """The profile that covers every shape set of a sweep: elementwise min and max, opt the first set's shapes.

    Raises:
        InputError: the sets name different inputs or give one input different ranks.
    """
    names = set(shape_sets[0]) if shape_sets else set()
    if any(set(s) != names for s in shape_sets):
        raise InputError("every shape in the sweep must give the same inputs")
    out: Profile = {}
    for name in sorted(names):
        shapes = [list(s[name]) for s in shape_sets]
        if len({len(s) for s in shapes}) != 1:
            raise InputError("the swept shapes of one input differ in rank", tensor=name)
        out[name] = {"min": [min(c) for c in zip(*shapes)], "opt": shapes[0], "max": [max(c) for c in zip(*shapes)]}
    return out


def parse_shape_sweep(text: str) -> List[Dict[str, List[int]]]:
    """``bench --shapes``: ``images:1x3x320x320,images:1x3x640x640`` is two shape sets; with several inputs a
    set ends where a name comes again (``a:1x3,b:1x4,a:2x3,b:2x4`` is two sets).

    Raises:
        InputError: a bad entry or shape.
    """
    sets: List[Dict[str, List[int]]] = [{}]
    for part in str(text).split(","):
        entry = parse_shapes_spec(part, "--shapes")
        name = next(iter(entry))
        if name in sets[-1]:
            sets.append({})
        sets[-1][name] = entry[name]
    return sets
