"""The rule language's grammar, as a lark (LALR) grammar string.

Kept as a Python string so packaging needs no data files. Keywords (AND, OR, NOT, count and the
function names) are case-insensitive regex terminals with a higher priority than FIELD, and end at a
word boundary, so `order` or `not_ready` still lex as field names; FIELD never matches a bare
AND/OR/NOT, so a misplaced logical keyword is reported as itself. Function names are recognised
only when followed by a word boundary; whether a function may be used where it appears is decided by
the type checker, not the grammar.
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
     | PREDICT LPAR FIELD COMMA DURATION COMMA DURATION RPAR -> predict
     | TIME_TO LPAR FIELD COMMA signed COMMA DURATION RPAR -> time_to
     | ANOMALY LPAR FIELD COMMA DURATION RPAR -> anomaly
     | OUTLIER LPAR FIELD RPAR -> outlier
     | FLEET_FN LPAR FIELD RPAR -> fleet_fn
     | COUNT LPAR condition RPAR -> count
     | LPAR condition RPAR -> paren

signed: MINUS? NUMBER

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

DURATION.2: /[0-9]+(\.[0-9]+)?[smhd]\b/
NUMBER: /([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?/
STRING: /"([^"\\\n]|\\.)*"/
FIELD: /(?!(?i:and|or|not)\b)[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_][A-Za-z0-9_.\-]*)?/

COMP_OP: /<=|>=|==|!=|<|>/
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
LPAR: "("
RPAR: ")"
COMMA: ","

%ignore /\s+/
"""
