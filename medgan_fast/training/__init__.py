"""Training: the config schema, one loop for every architecture, checkpoints, logging,
telemetry (NVML), plots, and generation from checkpoints.

Modules: config (TrainConfig, load_config), registry (Task, Context, the architecture
registry: how an architecture plugs in), gan (DCGAN/SNGAN task), data (datasets and
resumable loader order), loop (train), checkpoint, distributed (torchrun/DDP), telemetry
(log.jsonl, NVML), plots (loss.png, evolution.gif), generation (generate).
"""

from .checkpoint import CheckpointError, load_checkpoint
from .config import ConfigError, TrainConfig, load_config
from .generation import GenerateConfig, GenerateSummary, generate, load_generator
from .loop import RunSummary, train
from .registry import ARCHITECTURES, Architecture, Context, Task, register

__all__ = [
    "ARCHITECTURES", "Architecture", "CheckpointError", "ConfigError", "Context", "GenerateConfig", "GenerateSummary",
    "RunSummary", "Task", "TrainConfig", "generate", "load_checkpoint", "load_config", "load_generator", "register",
    "train",
]
