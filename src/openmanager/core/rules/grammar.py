"""The rule language's grammar, as a lark (LALR) grammar string.

Kept as a Python string so packaging needs no data files. Keywords (AND, OR, NOT, count and the
function names) are case-insensitive regex terminals with a higher priority than FIELD, and end at a
word boundary, so `order` or `not_ready` still lex as field names; FIELD never matches a bare
AND/OR/NOT, so a misplaced logical keyword is reported as itself. Function names are recognised
only when followed by a word boundary; whether a function may be used where it appears is decided by
the type checker, not the grammar. Labelled series: `disk{mount="/var"}` (one series), `disk{}` (all of a
server's), `max(disk{})` (one argument: over the series), `any(...)` / `all(...)`; `any` and `all` are
keywords. `predict`, `time_to`, `anomaly` and `outlier` take a metric or one series (`disk{mount="/var"}`).
"""

from __future__ import annotations

GRAMMAR = r"""
?start: condition

?condition: or_expr

?or_expr: and_expr (OR and_expr)*
?and_expr: not_expr (AND not_expr)*
?not_expr: NOT not_expr -> not_
         | compare

?compare: sum (COMP_OP sum)?
?sum: term ((PLUS | MINUS) term)*
?term: unary ((STAR | SLASH) unary)*
?unary: MINUS unary -> neg
      | atom

?atom: NUMBER -> number
     | STRING -> string
     | FIELD -> field
     | DURATION -> duration
     | WINDOW_FN LPAR FIELD COMMA DURATION RPAR -> window
     | PREDICT LPAR history_operand COMMA DURATION COMMA DURATION RPAR -> predict
     | TIME_TO LPAR history_operand COMMA signed COMMA DURATION RPAR -> time_to
     | ANOMALY LPAR history_operand COMMA DURATION RPAR -> anomaly
     | OUTLIER LPAR history_operand RPAR -> outlier
     | FIELD LBRACE LABEL_MATCH RBRACE -> selector
     | FIELD LBRACE RBRACE -> vector
     | WINDOW_FN LPAR FIELD LBRACE LABEL_MATCH RBRACE COMMA DURATION RPAR -> window_selector
     | WINDOW_FN LPAR FIELD LBRACE RBRACE RPAR -> reduce
     | QUANTIFIER LPAR condition RPAR -> quantified
     | FLEET_FN LPAR FIELD RPAR -> fleet_fn
     | COUNT LPAR condition RPAR -> count
     | LPAR condition RPAR -> paren

signed: MINUS? NUMBER

?history_operand: FIELD
                | FIELD LBRACE LABEL_MATCH RBRACE -> selector

OR.2: /or\b/i
AND.2: /and\b/i
NOT.2: /not\b/i
COUNT.2: /count\b/i
WINDOW_FN.2: /(avg|min|max|last|rate|delta|p95)\b/i
FLEET_FN.2: /fleet_(avg|min|max|p95)\b/i
PREDICT.2: /predict\b/i
TIME_TO.2: /time_to\b/i
ANOMALY.2: /anomaly\b/i
OUTLIER.2: /outlier\b/i
QUANTIFIER.2: /(any|all)\b/i

DURATION.2: /[0-9]+(\.[0-9]+)?[smhd]\b/
NUMBER: /([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?/
STRING: /"([^"\\\n]|\\.)*"/
LABEL_MATCH: /[A-Za-z_][A-Za-z0-9_]*[ \t]*=[ \t]*"([^"\\\n]|\\.)*"/
FIELD: /(?!(?i:and|or|not)\b)[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_][A-Za-z0-9_.\-]*)?/

COMP_OP: /<=|>=|==|!=|<|>/
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
LPAR: "("
RPAR: ")"
COMMA: ","
LBRACE: "{"
RBRACE: "}"

%ignore /\s+/
"""
