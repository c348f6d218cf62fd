"""Training: the shared loop (:func:`fit`), recipes, and robust training data."""

from .cli import add_arguments, run_from_args
from .distributed import average_gradients, item_generators, per_item, step_generator
from .data import DataConfig, FolderDataset, collate_skip, split_holdout
from .engine import Recipe, StepContext, TrainConfig, fit, latest_checkpoint
from .registry import get_recipe, list_recipes, load_recipe_config, register_recipe

__all__ = ["average_gradients", "item_generators", "per_item", "step_generator", "add_arguments", "run_from_args", "DataConfig", "FolderDataset", "Recipe", "StepContext", "TrainConfig", "collate_skip", "fit",
           "get_recipe", "latest_checkpoint", "list_recipes", "load_recipe_config", "register_recipe",
           "split_holdout"]
