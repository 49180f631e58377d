"""Migration 0004 seeds the default rule pack from data frozen in the migration, not from the live pack."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import openmanager
from openmanager.core.alertrules import DEFAULT_RULES, RuleSpec

MIGRATION = Path(openmanager.__file__).parent / "store" / "migrations" / "versions" / "0004_alerts.py"


def test_the_migration_imports_nothing_of_the_live_package() -> None:
    tree = ast.parse(MIGRATION.read_text())
    modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in modules if m.startswith("openmanager")]


def test_the_frozen_pack_is_what_the_live_pack_stores_today() -> None:
    spec = importlib.util.spec_from_file_location("migration_0004", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    frozen = list(module.DEFAULT_RULE_DEFINITIONS)
    # read as rules today (fields added since the freeze, e.g. `family`, take their defaults)
    assert [RuleSpec.from_api(b).to_api() for b in frozen] == [RuleSpec.from_api(b).to_api() for b in DEFAULT_RULES]
    for body in frozen:  # each still valid as stored, and read back with every stored field unchanged
        read = RuleSpec.from_api(body).to_api()
        assert {k: read[k] for k in body} == body
