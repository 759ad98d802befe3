"""SASLprep (RFC 4013): the stringprep profile for user names and passwords.

Used by SCRAM (RFC 5802 §2.2 prepares the password and user name with it) and by the
password hashing in ``pochta.passwords`` so that PLAIN and SCRAM agree on what a password is.
"""

from __future__ import annotations

import stringprep
import unicodedata


class SASLprepError(ValueError):
    """The string contains a prohibited character or breaks the bidi rules."""


def _prohibited(ch: str) -> bool:
    # RFC 4013 §2.3: the prohibited-output tables.
    return (
        stringprep.in_table_c12(ch)  # non-ASCII space characters
        or stringprep.in_table_c21_c22(ch)  # ASCII and non-ASCII control characters
        or stringprep.in_table_c3(ch)  # private use
        or stringprep.in_table_c4(ch)  # non-character code points
        or stringprep.in_table_c5(ch)  # surrogate codes
        or stringprep.in_table_c6(ch)  # inappropriate for plain text
        or stringprep.in_table_c7(ch)  # inappropriate for canonical representation
        or stringprep.in_table_c8(ch)  # change display properties / deprecated
        or stringprep.in_table_c9(ch)  # tagging characters
    )


def saslprep(value: str, *, allow_unassigned: bool = True) -> str:
    """Prepare ``value`` per RFC 4013. ``allow_unassigned`` is True for queries (what a
    client sends) and False for stored strings (RFC 3454 §7). Raises SASLprepError."""
    # §2.1 mapping: non-ASCII spaces to SPACE, "commonly mapped to nothing" removed.
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in value
        if not stringprep.in_table_b1(ch)
    )
    # §2.2 normalisation: Unicode form KC.
    prepared = unicodedata.normalize("NFKC", mapped)
    if not prepared:
        return prepared
    for ch in prepared:
        if _prohibited(ch):
            raise SASLprepError(f"prohibited character U+{ord(ch):04X}")
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise SASLprepError(f"unassigned code point U+{ord(ch):04X}")
    # §2.4 / RFC 3454 §6: bidirectional characters.
    has_ral = any(stringprep.in_table_d1(ch) for ch in prepared)
    if has_ral:
        if any(stringprep.in_table_d2(ch) for ch in prepared):
            raise SASLprepError("mixes right-to-left and left-to-right characters")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise SASLprepError("right-to-left string must start and end with RandALCat")
    return prepared
