"""INA3221 power monitors in sysfs (Jetson TX1/TX2/Nano/Xavier/Orin).

Two drivers (JETSON.md): the ``ina3221x`` IIO driver of JetPack <= 4 (``iio:deviceN/rail_name_<ch>``,
``in_power<ch>_input`` mW, ``in_voltage<ch>_input`` mV, ``in_current<ch>_input`` mA) and the mainline
``ina3221`` hwmon driver of JetPack >= 5 (``hwmon/hwmonN/in<ch>_label``, ``in<ch>_input`` mV,
``curr<ch>_input`` mA; power = V x I; ``NC`` labels and the shunt-sum channel ``in7`` skipped).
Devices are discovered by scanning ``<root>/bus/i2c/devices/*/name``, never by hard-coded paths;
``root`` is a parameter so tests run on sysfs trees built in a temporary folder.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Dict, Iterator, List, Tuple

from .probe_base import PowerProbe
from .tegrastats import INPUT_RAILS

Channel = Tuple[str, str, str]  # (rail name, kind "power"|"vi", path or "vpath|ipath")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip()


def discover(root: str = "/sys") -> List[dict]:
    """Find INA3221 rails under ``root``.

    Returns:
        ``[{"device": "1-0040", "driver": "hwmon"|"iio", "rail": name, "kind": "power"|"vi", "paths": [...]}]``
        sorted by device and channel. Unreadable name files are skipped.
    """
    found = []
    for name_file in sorted(glob.glob(os.path.join(root, "bus", "i2c", "devices", "*", "name"))):
        try:
            chip = _read(name_file)
        except OSError:
            continue
        if not chip.startswith("ina3221"):
            continue
        dev = os.path.dirname(name_file)
        devname = os.path.basename(dev)
        for hw in sorted(glob.glob(os.path.join(dev, "hwmon", "hwmon*"))):
            for ch, label in _labels(hw, "in*_label"):
                if ch == 7 or label == "NC" or label.lower().startswith("sum"):
                    continue
                found.append({"device": devname, "driver": "hwmon", "rail": label, "kind": "vi",
                              "paths": [os.path.join(hw, f"in{ch}_input"), os.path.join(hw, f"curr{ch}_input")]})
        for iio in sorted(glob.glob(os.path.join(dev, "iio:device*"))):
            for ch, label in _labels(iio, "rail_name_*"):
                if label == "NC":
                    continue
                power = os.path.join(iio, f"in_power{ch}_input")
                if os.path.exists(power):
                    found.append({"device": devname, "driver": "iio", "rail": label, "kind": "power",
                                  "paths": [power]})
                else:
                    found.append({"device": devname, "driver": "iio", "rail": label, "kind": "vi",
                                  "paths": [os.path.join(iio, f"in_voltage{ch}_input"),
                                            os.path.join(iio, f"in_current{ch}_input")]})
    return found


def _labels(folder: str, pattern: str) -> Iterator[Tuple[int, str]]:
    """``(channel, label)`` of each readable label file ``pattern`` in ``folder``, by channel."""
    for label_file in sorted(glob.glob(os.path.join(folder, pattern)), key=_channel):
        try:
            yield _channel(label_file), _read(label_file)
        except OSError:
            continue


def _channel(path: str) -> int:
    m = re.search(r"(\d+)(?:_label|_input)?$", os.path.basename(path))
    return int(m.group(1)) if m else -1


class Ina3221Probe(PowerProbe):
    """Poll INA3221 rails in sysfs; total = ``VDD_IN``/``POM_5V_IN`` or the sum of the rails (said so)."""

    name = "ina3221"

    def __init__(self, root: str = "/sys") -> None:
        super().__init__()
        self.root = root
        self.channels = discover(root)
        if not self.channels:
            self.reason = f"no INA3221 device under {os.path.join(root, 'bus/i2c/devices')}"
            return
        names = [c["rail"] for c in self.channels]
        self.rails = names
        self.total_source = next((n for n in INPUT_RAILS if n in names), None) or \
            "sum of module rails (" + "+".join(sorted(names)) + "); carrier board not counted"
        try:
            self.read()
        except (OSError, ValueError) as exc:
            self.reason = f"INA3221 rails found but unreadable: {exc}"
            return
        self.available = True
        self.reason = f"{len(names)} rails on {len({c['device'] for c in self.channels})} INA3221 device(s), " \
                      f"{self.channels[0]['driver']} driver"

    def read(self) -> dict:
        rails: Dict[str, float] = {}
        for c in self.channels:
            if c["kind"] == "power":
                mw = float(_read(c["paths"][0]))
            else:
                mv, ma = float(_read(c["paths"][0])), float(_read(c["paths"][1]))
                mw = mv * ma / 1000.0
            rails[c["rail"]] = mw
        total = rails.get(self.total_source) if self.total_source in rails else sum(rails.values())
        return {"total_mw": total, "rails": rails, "energy_mj": None}
