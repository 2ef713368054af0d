"""C-FIND attribute matching (PS3.4 C.2.2.2): pure functions over pydicom Datasets.

Used by the Modality Worklist SCP and the Query/Retrieve SCP:

    validate_identifier(identifier)          # MatchingError(status=A900 or C001) on a bad request
    matcher = compile_identifier(identifier) # parse ranges, compile wildcards once per query
    hits = [build_response(identifier, c) for c in candidates if matcher.matches(c)]

Candidates are expected decoded (values read through pydicom with their own Specific Character Set);
the identifier and each candidate may use different character sets, since all comparisons are on
Unicode text. The rules and the choices made where the standard leaves room are listed in
`agent.matching.compiler` and `agent.matching.response`.
"""

from agent.matching.compiler import (
    DATE_TIME_PAIRS,
    Matcher,
    compile_identifier,
    matches,
    validate_identifier,
)
from agent.matching.errors import A900, C001, MatchingError
from agent.matching.response import build_response

__all__ = [
    "A900",
    "C001",
    "DATE_TIME_PAIRS",
    "Matcher",
    "MatchingError",
    "build_response",
    "compile_identifier",
    "matches",
    "validate_identifier",
]
