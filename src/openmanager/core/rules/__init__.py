"""The rule language: parse, type-check and compile conditions such as `avg(cpu, 5m) > 80 AND
tags.team == "core"`, then evaluate them with three-valued (true / false / unknown) logic.

Pure: no I/O. The grammar and semantics are in PROTOCOL.md, "Rule language"; the modules document
the details (`limits` for what an expression may be, `parser` for syntax and durations, `typecheck`
for types, `compile` for evaluation).
"""

from __future__ import annotations

from openmanager.core.rules.compile import Condition, EvalContext, FleetContext, compile_condition, compile_steps
from openmanager.core.rules.limits import (
    FILTER_LIMITS,
    MAX_DEPTH,
    MAX_LENGTH,
    RULE_LIMITS,
    Limits,
    cost,
    forbidden_character,
    prescan,
)
from openmanager.core.rules.nodes import (
    Binary,
    Compare,
    Count,
    Expr,
    Field,
    FleetAggregate,
    Logical,
    Neg,
    Not,
    Number,
    String,
    Window,
)
from openmanager.core.rules.parser import parse, parse_duration, parse_steps, run_steps
from openmanager.core.rules.typecheck import Type, typecheck

__all__ = [
    "FILTER_LIMITS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "RULE_LIMITS",
    "Binary",
    "Compare",
    "Condition",
    "Count",
    "EvalContext",
    "Expr",
    "Field",
    "FleetAggregate",
    "FleetContext",
    "Limits",
    "Logical",
    "Neg",
    "Not",
    "Number",
    "String",
    "Type",
    "Window",
    "compile_condition",
    "compile_steps",
    "cost",
    "forbidden_character",
    "parse",
    "parse_duration",
    "parse_steps",
    "prescan",
    "run_steps",
    "typecheck",
]
