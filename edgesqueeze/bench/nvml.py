"""NVML power probe (desktop NVIDIA GPUs; package nvidia-ml-py, the ``nvml`` extra).

Prefers ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded, Volta+: exact energy by
differences) and falls back to ``nvmlDeviceGetPowerUsage`` (mW; a 1 s average on Ampere+, so short
runs smear). DRAM bandwidth utilisation comes from GPM (``NVML_GPM_METRIC_DRAM_BW_UTIL``, Hopper+);
``nvmlDeviceGetUtilizationRates().memory`` is the fraction of time memory was busy, not bandwidth,
and is never reported as bandwidth.
"""
from __future__ import annotations

from typing import Optional

from .probe_base import PowerProbe


class NvmlProbe(PowerProbe):
    """Poll one GPU through NVML."""

    name = "nvml"

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index
        self.mode = None
        self._nvml = None
        self._handle = None
        try:
            import pynvml
        except ImportError:
            self.reason = "the Python module 'pynvml' is not installed (pip install 'edgesqueeze[nvml]')"
            return
        try:
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(self._handle)
        except Exception as exc:  # noqa: BLE001 - NVMLError subclasses per cause
            self.reason = f"NVML unavailable: {exc}"
            return
        self._nvml = pynvml
        self.gpu_name = name.decode() if isinstance(name, bytes) else str(name)
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.mode = "total_energy"
        except Exception:  # noqa: BLE001
            try:
                pynvml.nvmlDeviceGetPowerUsage(self._handle)
                self.mode = "power_usage"
            except Exception as exc:  # noqa: BLE001
                self.reason = f"NVML reports no power for GPU {index} ({self.gpu_name}): {exc}"
                return
        self.rails = [f"GPU{index}"]
        self.total_source = f"GPU{index} {self.gpu_name} (board power; host not counted)"
        self.available = True
        self.reason = f"NVML {self.mode.replace('_', ' ')} on {self.gpu_name}"
        if self.mode == "power_usage":
            self.reason += " (a ~1 s moving average on Ampere and later: run for several seconds)"

    def read(self) -> dict:
        nv, h = self._nvml, self._handle
        if self.mode == "total_energy":
            return {"total_mw": None, "rails": {}, "energy_mj": float(nv.nvmlDeviceGetTotalEnergyConsumption(h))}
        mw = float(nv.nvmlDeviceGetPowerUsage(h))
        return {"total_mw": mw, "rails": {self.rails[0]: mw}, "energy_mj": None}

    def stop(self) -> None:
        pass

    # ------------------------------------------------------------------ GPM bandwidth
    def gpm_start(self):
        """Take the first GPM sample; returns a token for :meth:`gpm_dram_bw_util` or None when unsupported."""
        if self._nvml is None:
            return None
        nv = self._nvml
        try:
            if not nv.nvmlGpmQueryDeviceSupport(self._handle).isSupportedDevice:
                return None
            s1 = nv.nvmlGpmSampleAlloc()
            nv.nvmlGpmSampleGet(self._handle, s1)
            return s1
        except Exception:  # noqa: BLE001 - older drivers/GPUs: no GPM
            return None

    def gpm_dram_bw_util(self, token) -> Optional[float]:
        """DRAM bandwidth utilisation (% of peak) between :meth:`gpm_start` and now, or None."""
        if token is None:
            return None
        nv = self._nvml
        s2 = None
        try:
            s2 = nv.nvmlGpmSampleAlloc()
            nv.nvmlGpmSampleGet(self._handle, s2)
            mg = nv.c_nvmlGpmMetricsGet_t()
            mg.version = nv.NVML_GPM_METRICS_GET_VERSION
            mg.numMetrics = 1
            mg.sample1, mg.sample2 = token, s2
            mg.metrics[0].metricId = nv.NVML_GPM_METRIC_DRAM_BW_UTIL
            nv.nvmlGpmMetricsGet(mg)
            return float(mg.metrics[0].value)
        except Exception:  # noqa: BLE001
            return None
        finally:
            for s in (token, s2):
                if s is not None:
                    try:
                        nv.nvmlGpmSampleFree(s)
                    except Exception:  # noqa: BLE001
                        pass
