"""Launch a Python snippet as two torch.distributed CPU processes (gloo), as accelerate launch would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[2]


def run_two_processes(script: str, timeout: float = 600) -> List[str]:
    """Run ``script`` as ranks 0 and 1 of a 2-process group on this machine; returns each rank's output.

    Fails the test (AssertionError with the output) when a rank exits non-zero.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1",
               "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, cwd=str(REPO),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = []
    for p in procs:
        output = p.communicate(timeout=timeout)[0].decode()
        assert p.returncode == 0, output
        outputs.append(output)
    return outputs
