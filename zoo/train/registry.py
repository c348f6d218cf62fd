"""Recipe registry: ``register_recipe(name)`` and YAML training configs.

A training YAML has two sections::

    train:            # zoo.train.TrainConfig
      max_steps: 2000
      batch_size: 8
    recipe:           # the recipe's own config class (losses, learning rates, model config)
      ...
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Type, Union

import yaml

from .engine import Recipe, TrainConfig

RECIPE_MODULES: Dict[str, str] = {
    "wavtokenizer": "audio.wavtokenizer.recipe",
    "tadicodec": "audio.tadicodec.recipe",
    "tadicodec-vocoder": "audio.tadicodec.recipe",
    "titok": "image.titok.recipe",
    "flextok": "image.flextok.recipe",
    "cdt": "video.cdt.recipe",
    "cdt-fsq": "video.cdt.recipe",
    "tfm": "eeg.tfm.recipe",
    "tfm-mtp": "eeg.tfm.downstream",
    "tfm-classifier": "eeg.tfm.downstream",
}
_RECIPES: Dict[str, Type[Recipe]] = {}


def register_recipe(name: str) -> Callable[[Type[Recipe]], Type[Recipe]]:
    def deco(cls: Type[Recipe]) -> Type[Recipe]:
        cls.name = name
        _RECIPES[name] = cls
        return cls

    return deco


def get_recipe(name: str) -> Type[Recipe]:
    if name not in _RECIPES and name in RECIPE_MODULES:
        try:
            importlib.import_module(RECIPE_MODULES[name])
        except ModuleNotFoundError as exc:
            raise ValueError(f"recipe {name!r} is not available in this version ({exc})") from exc
    if name not in _RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known recipes: {list_recipes()}")
    return _RECIPES[name]


def list_recipes() -> List[str]:
    """Registered recipes and those whose module exists in this installation."""
    import importlib.util

    def available(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            return False

    return sorted(set(_RECIPES) | {n for n, m in RECIPE_MODULES.items() if available(m)})


def load_recipe_config(name: str, config: Union[str, Path, Dict[str, Any], None]) -> Recipe:
    """Build recipe ``name`` from a YAML file or dict with ``train:`` and ``recipe:`` sections."""
    cls = get_recipe(name)
    if config is None:
        data: Dict[str, Any] = {}
    elif isinstance(config, dict):
        data = config
    else:
        path = Path(config)
        if not path.is_file():
            raise ValueError(f"training config {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path.name}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"training config must be a mapping with 'train' and 'recipe' sections, got {type(data).__name__}")
    unknown = sorted(set(data) - {"train", "recipe"})
    if unknown:
        raise ValueError(f"training config: unknown sections {unknown} (expected 'train' and 'recipe')")
    train = TrainConfig.from_dict(data.get("train") or {})
    return cls(cls.config_class.from_dict(data.get("recipe") or {}), train)
