"""The usage example of docs/models/titok.md runs (on the parity fixtures instead of a downloaded release)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "models" / "titok.md"


@pytest.mark.parametrize("model", ["two_stage", "single_stage_vq", "single_stage_vae"])
def test_usage_example_runs(parity, model, capsys):
    folder = parity("titok") / model
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/models/titok.md has no python example"
    code = blocks[0].replace('"path/to/tokenizer_titok_l32_imagenet"', repr(str(folder)))
    assert repr(str(folder)) in code
    exec(compile(code, str(DOC), "exec"), {})
    out = capsys.readouterr().out
    assert "torch.Size([2, 3, 32, 32])" in out
