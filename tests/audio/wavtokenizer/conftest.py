"""WavTokenizer tests run single-threaded.

The models here are tiny: intra-op threads buy nothing, and on a loaded machine OpenMP's spin-waiting makes
2-thread runs of these small convs/LSTMs up to 100x slower than one thread. The previous setting is restored.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every WavTokenizer test runs with one intra-op thread (tests/conftest.py ``one_thread``)."""
    yield
