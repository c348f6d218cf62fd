"""benchmarks/train.py runs a recipe through the training loop and reports a positive samples/s."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("_bench_train", ROOT / "benchmarks" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_tfm_row(shared_data, tmp_path, capsys):
    data_root = shared_data("eeg").parent
    mod = _module()
    rows = mod.main(["--recipes", "tfm", "--configs", "tiny", "--steps", "1", "--data-root", str(data_root),
                     "--json", str(tmp_path / "r.json")])
    assert len(rows) == 1 and "error" not in rows[0], rows
    # tiny = the bundled tokenizer's own training configuration
    batch = yaml.safe_load((ROOT / "hub_configs" / "bundled" / "tfm-tuev-tiny" / "train.yaml").read_text())
    batch = batch["train"]["batch_size"]
    assert rows[0]["samples_per_s"] > 0 and rows[0]["params_M"] > 0 and rows[0]["batch"] == batch
    assert json.loads((tmp_path / "r.json").read_text())[0]["recipe"] == "tfm"
    assert f"| tfm | tiny | {batch} | 1 |" in capsys.readouterr().out


def test_bad_arguments_fail(tmp_path):
    mod = _module()
    with pytest.raises(SystemExit):
        mod.main(["--recipes", "nope"])
    with pytest.raises(SystemExit):
        mod.main(["--configs", "huge"])
