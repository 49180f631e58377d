"""The rule language: parse, type-check and compile conditions such as `avg(cpu, 5m) > 80 AND
tags.team == "core"`, then evaluate them with three-valued (true / false / unknown) logic.

Pure: no I/O. The grammar and semantics are in PROTOCOL.md, "Rule language"; the modules document
the details (`limits` for what an expression may be, `parser` for syntax and durations, `typecheck`
for types, `compile` for evaluation, `context` for what an evaluation reads).
"""

from __future__ import annotations

from openmanager.core.rules.compile import (
    Condition,
    call_label,
    compile_condition,
    compile_steps,
    history_functions,
    history_needed,
    number_evaluator,
)
from openmanager.core.rules.context import EvalContext, FleetContext, HistoryContext
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
    Anomaly,
    Binary,
    Compare,
    Count,
    Expr,
    Field,
    FleetAggregate,
    Forecast,
    Logical,
    Neg,
    Not,
    Number,
    Outlier,
    String,
    Window,
)
from openmanager.core.rules.parser import format_duration, parse, parse_duration, parse_steps, run_steps
from openmanager.core.rules.typecheck import Type, typecheck

__all__ = [
    "FILTER_LIMITS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "RULE_LIMITS",
    "Anomaly",
    "Binary",
    "Compare",
    "Condition",
    "Count",
    "EvalContext",
    "Expr",
    "Field",
    "FleetAggregate",
    "FleetContext",
    "Forecast",
    "HistoryContext",
    "Limits",
    "Logical",
    "Neg",
    "Not",
    "Number",
    "Outlier",
    "String",
    "Type",
    "Window",
    "call_label",
    "compile_condition",
    "compile_steps",
    "cost",
    "forbidden_character",
    "format_duration",
    "history_functions",
    "history_needed",
    "number_evaluator",
    "parse",
    "parse_duration",
    "parse_steps",
    "prescan",
    "run_steps",
    "typecheck",
]
