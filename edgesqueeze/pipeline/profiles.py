"""The build's TensorRT optimization profile: the user's ``--min/--opt/--max-shapes`` held against the model, and
the default profile of its dynamic inputs derived from the model's shapes and the data's."""
from __future__ import annotations

from typing import Optional

import onnx

from ..backends.trt_profile import check_profile, default_profile, dynamic_profile
from ..errors import InputError
from ..model import concrete_input_shapes, input_specs
from .options import BuildOptions
from .support import first_real_feed


def resolve_profile(model: onnx.ModelProto, options: BuildOptions) -> Optional[dict]:
    """The optimization profile of ``model``'s dynamic inputs for the target's TensorRT (None when every input is
    static or the target has no TensorRT). The user's profile is checked against the model in any case.

    Raises:
        InputError: the user's profile does not fit the model (name, rank, fixed dims), or a dynamic non-batch
            dimension has neither a given shape, nor data, nor ``--input``, nor model metadata to take it from.
    """
    specs = input_specs(model)
    given = check_profile(specs, options.shape_profile)
    if not options.profile.has_tensorrt:
        return None
    data = [(options.calib, model)] if options.calib_used else []
    feed = first_real_feed(data + [(options.val, model)])
    shapes = {name: list(arr.shape) for name, arr in (feed or {}).items()}
    if not given and len(shapes) < len(specs):  # no data: --input, then the model's own metadata (imgsz)
        try:
            shapes = {**concrete_input_shapes(model, options.input_shapes, skip=list(shapes)), **shapes}
        except InputError:
            pass  # default_profile names the dimension that has no value and what to give
    return dynamic_profile(specs, default_profile(specs, shapes, given=given)) or None
