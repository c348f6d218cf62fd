"""The usage example of docs/models/wavtokenizer.md runs (on the parity fixture's release files)."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "models" / "wavtokenizer.md"


def test_usage_example_runs(parity):
    fixture = parity("wavtokenizer")
    block = re.search(r"## Usage\n\n```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    scope = {"ckpt_path": fixture / "WavTokenizer_tiny_320_24k_128.ckpt",
             "yaml_path": fixture / "wavtokenizer_tiny_frame75_nq1_code128_dim32.yaml"}
    exec(compile(block, str(DOC), "exec"), scope)  # noqa: S102 - our own documentation
    assert scope["tokens"].ids.shape == (2, 1, 75)
    assert scope["tokens"].lengths.tolist() == [75, 39]
    assert scope["audio"].shape == (2, 1, 75 * 320)
    assert scope["features"].shape == (2, 32, 75)
    assert scope["long"].ids.shape == (2, 1, 75)
