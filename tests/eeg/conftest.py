"""Module-scoped access to the EEG parity fixtures (same location rules as tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
_SHARED = Path(os.environ.get("TOKENZOO_SHARED", _REPO.parent / "shared")).resolve()


def eeg_parity_dir(family: str) -> Path:
    path = _SHARED / "parity" / family
    if not path.exists():
        pytest.skip(f"shared fixtures not found at {path} (set TOKENZOO_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="module")
def tfm_dir() -> Path:
    return eeg_parity_dir("tfm")


@pytest.fixture(scope="module")
def lipcot_dir() -> Path:
    return eeg_parity_dir("lipcot")
