"""LiPCoT: linear-predictive-coding tokens for time series (family ``lipcot``)."""

from .config import LiPCoTConfig
from .model import LiPCoT

__all__ = ["LiPCoT", "LiPCoTConfig"]
