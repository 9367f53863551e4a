"""Run logging: log.jsonl (one JSON object a line) and GPU telemetry through NVML.

Each step record has: step, epoch, time (seconds since the start of this process's run),
the step's metrics (losses, D(x), D(G(z)), ...), learning rates, images_per_second (all
processes together, over the last log interval) and, on a GPU, gpu_memory_used_mb and
gpu_utilization (NVML, the whole device) and torch_max_allocated_mb (this process's peak).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

__all__ = ["GpuMonitor", "JsonlLog", "read_log", "truncate_log"]


class GpuMonitor:
    """NVML readings for one CUDA device; empty readings on CPU or wherever NVML fails
    (no driver, no GPU: pynvml raises NVMLError, which is caught once and NVML left off)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._handle = None
        if device.type != "cuda":
            return
        try:
            import pynvml
            pynvml.nvmlInit()
            self._pynvml = pynvml
            # By UUID: NVML numbers all GPUs, CUDA only the visible ones (CUDA_VISIBLE_DEVICES).
            uuid = str(torch.cuda.get_device_properties(device).uuid)
            try:
                self._handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
            except pynvml.NVMLError:
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        except Exception:  # ImportError, pynvml.NVMLError (driver or library missing)
            self._handle = None

    def read(self) -> dict[str, float]:
        if self.device.type != "cuda":
            return {}
        reading = {"torch_max_allocated_mb": torch.cuda.max_memory_allocated(self.device) / 2**20}
        if self._handle is not None:
            try:
                memory = self._pynvml.nvmlDeviceGetMemoryInfo(self._handle)
                utilization = self._pynvml.nvmlDeviceGetUtilizationRates(self._handle)
                reading.update(gpu_memory_used_mb=memory.used / 2**20, gpu_utilization=float(utilization.gpu))
            except self._pynvml.NVMLError:
                self._handle = None
        return reading


class JsonlLog:
    """Appends records to a .jsonl file, one flushed line each (a killed run keeps its lines)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps({key: _plain(value) for key, value in record.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)   # JSON has no NaN/inf
    return value


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a log.jsonl (a torn last line, from a killed run, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_log(path: str | Path, step: int) -> None:
    """Keeps the records up to `step` (for a run resumed from the checkpoint at `step`: what
    came after it is trained again and logged again)."""
    path = Path(path)
    if path.is_file():
        kept = [record for record in read_log(path) if record.get("step", 0) <= step]
        path.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")
