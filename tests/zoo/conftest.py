"""Fixtures of the foundation tests: toy families registered for one test only, and a scratch registry."""

from __future__ import annotations

import pytest

from zoo import hub_configs_schema


@pytest.fixture
def toy_families():
    from . import toy_plugin

    toy_plugin.register()
    yield toy_plugin
    toy_plugin.unregister()


@pytest.fixture
def registry_dir(tmp_path, monkeypatch):
    """An empty folder of hub_configs YAMLs that the registry reads (through $TOKENZOO_HUB_CONFIGS)."""
    d = tmp_path / "hub_configs"
    d.mkdir()
    monkeypatch.setenv(hub_configs_schema.ENV_VAR, str(d))
    return d
