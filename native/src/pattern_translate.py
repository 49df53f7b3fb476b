"""Python `re` pattern -> Rust `regex` pattern with the same fullmatch and groups (re.ASCII).

Run inside the extension when an InvoiceCore is built (embedded with include_str!). Python's own
parser reads the pattern, so every quirk of its syntax (escapes, `{` taken literally, class
parsing, branch optimisations) is Python's; the tree is then written in Rust syntax:

- \\d \\w \\s and their negations as explicit ASCII classes (re.ASCII), `.` as [^\\n];
- literals as \\x{...}, so no character is special to Rust by accident ([[:alpha:]], &&, ~~, --);
- ^ and \\A as \\A, \\Z as \\z; \\b and \\B as ASCII word boundaries;
- `$` (end, or before a final newline) only where nothing can follow it in the match, as \\z:
  under fullmatch the match must end at the end of the string, so `$` can only succeed there.

Anything else is refused with ValueError: lookarounds, backreferences, conditionals, atomic
groups, possessive repeats, inline flags, `$` where something could follow it, and a repetition
(more than once) of something that can match the empty string: there sre and Rust's engines
choose different paths, and the groups differ (found by comparing them on random patterns).
The empty string itself is judged by Python (sre's \\B never matches in an empty string).
"""

from __future__ import annotations

import re
from re import _constants as C
from re import _parser as P
from typing import Any

DIGIT = "0-9"
WORD = "0-9A-Za-z_"
SPACE = "\\t\\n\\x0B\\x0C\\r\\x20"  # ASCII \s: Py_ISSPACE
IN_CATEGORY = {C.CATEGORY_DIGIT: DIGIT, C.CATEGORY_WORD: WORD, C.CATEGORY_SPACE: SPACE}
NOT_CATEGORY = {C.CATEGORY_NOT_DIGIT: DIGIT, C.CATEGORY_NOT_WORD: WORD, C.CATEGORY_NOT_SPACE: SPACE}
NEVER = "[^\\x{0}-\\x{10FFFF}]"
ANY = "[\\x{0}-\\x{10FFFF}]"


class Unsupported(ValueError):
    pass


def _surrogate(c: int) -> bool:
    return 0xD800 <= c <= 0xDFFF


def _ch(c: int) -> str:
    return f"\\x{{{c:X}}}"


def _class(items: list[tuple[Any, Any]]) -> str:
    negate = False
    parts = []
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            if not _surrogate(av):  # a str decoded from UTF-8 never holds one
                parts.append(_ch(av))
        elif op is C.RANGE:
            lo, hi = av
            if lo <= 0xD7FF:
                parts.append(_ch(lo) + "-" + _ch(min(hi, 0xD7FF)))
            if hi >= 0xE000:
                parts.append(_ch(max(lo, 0xE000)) + "-" + _ch(hi))
        elif op is C.CATEGORY and av in IN_CATEGORY:
            parts.append(IN_CATEGORY[av])
        elif op is C.CATEGORY and av in NOT_CATEGORY:
            parts.append("[^" + NOT_CATEGORY[av] + "]")
        else:
            raise Unsupported(f"character class item {op} {av} is not supported by the compiled core")
    if not parts:
        return ANY if negate else NEVER
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def _seq(items: Any, terminal: bool) -> str:
    items = list(items)
    out = []
    for i, (op, av) in enumerate(items):
        last = all(o is C.AT for o, _ in items[i + 1 :])
        out.append(_item(op, av, terminal and last))
    return "".join(out)


def _item(op: Any, av: Any, terminal: bool) -> str:
    if op is C.LITERAL:
        return NEVER if _surrogate(av) else _ch(av)
    if op is C.NOT_LITERAL:
        return ANY if _surrogate(av) else "[^" + _ch(av) + "]"
    if op is C.ANY:
        return "[^\\n]"
    if op is C.IN:
        return _class(av)
    if op is C.AT:
        if av is C.AT_BEGINNING or av is C.AT_BEGINNING_STRING:
            return "\\A"
        if av is C.AT_END_STRING:
            return "\\z"
        if av is C.AT_END:
            if not terminal:
                raise Unsupported("`$` is supported by the compiled core only where nothing can follow it")
            return "\\z"
        if av is C.AT_BOUNDARY:
            return "(?-u:\\b)"
        if av is C.AT_NON_BOUNDARY:
            return "(?-u:\\B)"
        raise Unsupported(f"anchor {av} is not supported by the compiled core")
    if op is C.BRANCH:
        return "(?:" + "|".join(_seq(alt, terminal) for alt in av[1]) + ")"
    if op is C.SUBPATTERN:
        group, add_flags, del_flags, p = av
        if (add_flags | del_flags) & ~C.SRE_FLAG_VERBOSE:  # verbose only changed how Python parsed it
            raise Unsupported("inline flags are not supported by the compiled core")
        return ("(" if group is not None else "(?:") + _seq(p, terminal) + ")"
    if op is C.MAX_REPEAT or op is C.MIN_REPEAT:
        lo, hi, p = av
        upper = "" if hi == C.MAXREPEAT else str(hi)
        repeats = hi == C.MAXREPEAT or hi > 1
        if repeats and p.getwidth()[0] == 0:
            # sre ends a loop at an iteration that matched nothing; Rust's engines choose another path
            # there, and the groups (inside the loop or after it) can come out different
            raise Unsupported("a repetition whose body can match nothing is not supported by the compiled core")
        inner = _seq(p, terminal and not repeats)
        return "(?:" + inner + "){" + str(lo) + "," + upper + "}" + ("?" if op is C.MIN_REPEAT else "")
    raise Unsupported(f"{op} is not supported by the compiled core")


def translate(pattern: str) -> tuple[str, int, tuple[bool, bool] | None]:
    """(Rust pattern for a whole-string match, number of groups, Python's verdict on the empty string).

    The empty string is judged by Python itself (which groups take part; they can only be empty):
    sre's \\B never matches in an empty string, Rust's does. ValueError when not translatable.
    """
    if not isinstance(pattern, str):
        raise ValueError("the invoice code pattern must be a str")
    try:
        compiled = re.compile(pattern, re.ASCII)
        parsed = P.parse(pattern, re.ASCII)
    except re.error as exc:
        raise ValueError(f"invoice code pattern does not compile: {exc}") from None
    if parsed.state.flags & ~(C.SRE_FLAG_ASCII | C.SRE_FLAG_VERBOSE):
        raise Unsupported("inline flags are not supported by the compiled core")
    body = _seq(parsed, True)
    empty = compiled.fullmatch("")
    on_empty = None
    if empty is not None and compiled.groups >= 2:
        on_empty = (empty.group(1) is not None, empty.group(2) is not None)
    return "\\A(?:" + body + ")\\z", compiled.groups, on_empty
