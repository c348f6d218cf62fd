"""WavTokenizer tests run single-threaded.

The models here are tiny: intra-op threads buy nothing, and on a loaded machine OpenMP's spin-waiting makes
2-thread runs of these small convs/LSTMs up to 100x slower than one thread. The previous setting is restored.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
