"""Training: the config schema, one loop for every architecture, checkpoints, logging,
telemetry (NVML) and plots. Generation from checkpoints is a job (medgan_fast.jobs.generation).

Modules: config (TrainConfig, load_config), options (an architecture's own keys), registry
(Task, Context, Grid, the architecture registry: how an architecture plugs in; start there
to add one), gan (DCGAN/SNGAN task), data (datasets and resumable loader order), loop
(train: steps, validation, best checkpoint, resume), run_files (the run directory's logs,
grids and plots), checkpoint, distributed (torchrun/DDP), telemetry (log.jsonl, NVML),
plots (loss.png, metrics.png, evolution.gif).
"""

from .checkpoint import CheckpointError, load_checkpoint
from .config import ConfigError, TrainConfig, load_config
from .loop import RunSummary, train
from .registry import ARCHITECTURES, Architecture, Context, Task, register

__all__ = [
    "ARCHITECTURES", "Architecture", "CheckpointError", "ConfigError", "Context", "RunSummary", "Task", "TrainConfig",
    "load_checkpoint", "load_config", "register", "train",
]
