"""Finding the clauses that write in Cypher text.

For Bolt servers that run writes in a read transaction anyway (FalkorDB's Bolt endpoint
ignores the access mode and cannot roll back), a read is refused before it is sent.
"""

from __future__ import annotations

import re

__all__ = ["writing_clause"]

WRITING_CLAUSES = frozenset(
    {"CREATE", "MERGE", "SET", "DELETE", "DETACH", "REMOVE", "DROP", "FOREACH"}
    | {"ALTER", "GRANT", "DENY", "REVOKE", "RENAME"}  # administration
)

# Strings, quoted names and comments first, so that their text is never taken for a
# keyword; an unterminated one runs to the end (the server refuses it anyway).
_TOKEN = re.compile(
    r"""
      (?P<quoted> '(?:[^'\\]|\\.)*'? | "(?:[^"\\]|\\.)*"? | `(?:[^`]|``)*`?
                | //[^\n]* | /\*.*?(?:\*/|\Z) )
    | (?P<word> \w+ )
    | (?P<space> \s+ )
    | (?P<other> . )
    """,
    re.VERBOSE | re.DOTALL,
)

# A word right after these is a property (n.set), label or type (:Set), parameter ($set)
# or type alternative ([:A|SET]); a write after `|` could only be inside FOREACH, which
# is refused itself.
_NAME_PREFIXES = frozenset(".:$|")


def writing_clause(cypher: str) -> str | None:
    """The first keyword of ``cypher`` that writes (``"CREATE"``, ``"SET"``, ...), or None.

    Keywords inside strings, comments and backquoted names do not count, nor words used
    as names (``n.set``, ``:Merge``, ``$delete``, a map key ``{set: 1}``). Procedure calls
    are not judged: a procedure that writes is left to the server.
    """
    tokens = [m for m in _TOKEN.finditer(cypher) if m.lastgroup != "space"]
    for index, token in enumerate(tokens):
        if token.lastgroup != "word" or token.group().upper() not in WRITING_CLAUSES:
            continue
        before = tokens[index - 1].group() if index > 0 else ""
        after = tokens[index + 1].group() if index + 1 < len(tokens) else ""
        if before not in _NAME_PREFIXES and after != ":":
            return token.group().upper()
    return None
