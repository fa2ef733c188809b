"""``edgesqueeze devices``: list the device profiles."""
from __future__ import annotations

import click

from .common import emit, json_option, table


@click.command("devices")
@click.argument("names", nargs=-1)
@json_option
def command(names, as_json):
    """List the device profiles that --target accepts (or show the named ones in full).

    \b
    Examples:
      edgesqueeze devices
      edgesqueeze devices tx2 orin-nano --json
    """
    from ..devices import get_profile, list_profiles

    profiles = [get_profile(n) for n in names] if names else list_profiles()
    data = [p.to_dict() for p in profiles]

    def text(_):
        if names:
            out = []
            for p in profiles:
                d = p.to_dict()
                out.append(f"{p.name}: {p.display_name}")
                for k in sorted(d):
                    if k not in ("name", "display_name"):
                        out.append(f"  {k}: {d[k]}")
            return "\n".join(out)
        rows = []
        for p in profiles:
            g = p.peak_gflops
            rows.append([p.name, p.arch, f"sm_{p.sm}" if p.sm else "-", p.cuda_cores or "-",
                         f"{g['fp32'] / 1000:.2f}", f"{g['fp16'] / 1000:.2f}" if p.fast_fp16 else "-",
                         f"{g['int8'] / 1000:.1f}" if p.int8 and g.get("int8") else "-",
                         "yes" if p.sparse_2_4 else "-", f"{p.peak_bandwidth_gbs:g}", p.dla_cores or "-",
                         p.jetpack or "-", p.tensorrt or "-",
                         f"{p.onnx_max_opset}/{p.onnx_max_ir}" if p.onnx_max_opset else "-", p.best_precision()])
        return table(rows, ["target", "arch", "SM", "cores", "FP32 TF", "FP16 TF", "INT8 TOPS", "2:4", "GB/s",
                            "DLA", "JetPack", "TensorRT", "opset/IR", "auto"], "lllrrrrlrrllll")

    emit(data if names or as_json else data, as_json, text)
