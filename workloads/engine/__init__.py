"""Training engine: recipes, lr schedule, optimizer, train loop, evaluation, checkpoint state.

Pure PyTorch (never ray or mlflow). Works in one process, or inside workers where
torch.distributed is already initialised and the model is wrapped in DistributedDataParallel.
"""

from .divergence import DivergenceError
from .evaluate import evaluate
from .loop import EpochStats, train_epoch
from .optim import build_optimizer
from .recipes import Recipe, get_recipe, list_recipes, recipe_for_depth
from .schedule import lr_at, plateau_decays, set_lr
from .state import (
    CheckpointError,
    config_hash,
    load_checkpoint,
    make_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from .wrapping import broadcast_buffers, compile_model, prepare_model, unwrap_model

__all__ = [
    "CheckpointError",
    "DivergenceError",
    "EpochStats",
    "Recipe",
    "broadcast_buffers",
    "build_optimizer",
    "compile_model",
    "config_hash",
    "evaluate",
    "get_recipe",
    "list_recipes",
    "load_checkpoint",
    "lr_at",
    "make_checkpoint",
    "plateau_decays",
    "prepare_model",
    "recipe_for_depth",
    "restore_checkpoint",
    "save_checkpoint",
    "set_lr",
    "train_epoch",
    "unwrap_model",
]
