"""Bench setup: the thread count of the CPU targets and the run's metadata.

    python -m pytest benches --benchmark-enable --benchmark-json=benches/results/<machine>.json
    python benches/report.py benches/results/<machine>.json --readme README.md
    MEDGAN_FAST_BENCH_THREADS=1 python -m pytest benches -k "not cuda" --benchmark-enable \
        --benchmark-json=benches/results/<machine>-1thread.json
    python benches/report.py ... --scaling benches/results/<machine>-1thread.json benches/results/<machine>.json
"""

import os
import platform
import sys
from pathlib import Path

import pytest
import torch

import medgan_fast

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _inputs

# The CPU targets are stated for 2 threads; every peer gets the same. Thread scaling:
# MEDGAN_FAST_BENCH_THREADS=1 in a run of its own (report.py --scaling compares the runs).
CPU_THREADS = int(os.environ.get("MEDGAN_FAST_BENCH_THREADS", "2"))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(CPU_THREADS)
    try:
        import cv2
        cv2.setNumThreads(CPU_THREADS)
    except ImportError:
        pass


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["medgan_fast"] = {
        "cpu_model": _cpu_model(),
        "cpu_threads": CPU_THREADS,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "build": medgan_fast.build_info(),
    }
