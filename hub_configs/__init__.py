"""Registry data: one YAML per released or bundled checkpoint (schema: :mod:`zoo.hub_configs_schema`).

Small bundled weights live in ``hub_configs/bundled/`` and are referenced by ``local:`` paths.
"""
