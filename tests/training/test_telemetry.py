"""Telemetry without a GPU (NVML through a stand-in pynvml, NVMLError caught), log.jsonl, GIF frames."""

from __future__ import annotations

from types import SimpleNamespace

import pynvml
import torch

from medgan_fast.training.plots import MAX_FRAMES, evenly_spaced
from medgan_fast.training.telemetry import GpuMonitor, JsonlLog, read_log, truncate_log


def _fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 5 * 2**20)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(uuid="1234-abcd"))


def test_nvml_readings(monkeypatch):
    _fake_cuda(monkeypatch)
    handles = []
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByUUID", lambda uuid: handles.append(uuid) or "handle")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda handle: SimpleNamespace(used=300 * 2**20))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", lambda handle: SimpleNamespace(gpu=57))
    reading = GpuMonitor(torch.device("cuda", 0)).read()
    assert reading == {"torch_max_allocated_mb": 5.0, "gpu_memory_used_mb": 300.0, "gpu_utilization": 57.0}
    assert handles == ["GPU-1234-abcd"]   # by UUID: NVML and CUDA number GPUs differently


def test_nvml_errors_are_caught(monkeypatch):
    _fake_cuda(monkeypatch)

    def fail(*args):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    assert GpuMonitor(torch.device("cuda", 0)).read() == {"torch_max_allocated_mb": 5.0}
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByUUID", lambda uuid: "handle")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", fail)   # a reading that fails turns NVML off
    monitor = GpuMonitor(torch.device("cuda", 0))
    assert monitor.read() == {"torch_max_allocated_mb": 5.0} and monitor._handle is None
    assert GpuMonitor(torch.device("cpu")).read() == {}


def test_log_lines_and_truncation(tmp_path):
    log = JsonlLog(tmp_path / "log.jsonl")
    for step in range(1, 6):
        log.write({"step": step, "loss_d": float("nan") if step == 3 else step / 10})
    log.close()
    with open(tmp_path / "log.jsonl", "a") as file:
        file.write('{"step": 6, "loss')   # a line torn by a kill
    records = read_log(tmp_path / "log.jsonl")
    assert [record["step"] for record in records] == [1, 2, 3, 4, 5] and records[2]["loss_d"] == "nan"
    truncate_log(tmp_path / "log.jsonl", 3)
    assert [record["step"] for record in read_log(tmp_path / "log.jsonl")] == [1, 2, 3]


def test_evolution_frames_are_capped_evenly():
    assert evenly_spaced(list(range(5))) == [0, 1, 2, 3, 4]
    picked = evenly_spaced(list(range(200)))
    assert len(picked) == MAX_FRAMES and picked[0] == 0 and picked[-1] == 199 and picked == sorted(set(picked))
