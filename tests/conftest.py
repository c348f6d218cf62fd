"""Shared test fixtures: where the read-only parity fixtures and the data corpus live."""

from __future__ import annotations

import os
from pathlib import Path

# Build and test machines have no route to the Hugging Face Hub: make any Hub access use the local cache only,
# so that a test reaching for the network fails at once instead of waiting for timeouts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TOKENZOO_SHARED", REPO.parent / "shared")).resolve()

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (restored afterwards): tiny CPU workloads run several times faster on a
    loaded 2-core machine without a second thread spinning. Use with ``pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _shared_subdir(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared fixtures not found at {path} (set TOKENZOO_SHARED to the shared/ folder)")
    return path


@pytest.fixture
def parity():
    """``parity("wavtokenizer")`` -> Path of ../shared/parity/wavtokenizer (skips with a message when absent)."""
    return lambda family: _shared_subdir("parity", family)


@pytest.fixture
def shared_data():
    """``shared_data("audio/speech")`` -> Path inside ../shared/data (skips with a message when absent)."""
    return lambda *parts: _shared_subdir("data", *parts)
