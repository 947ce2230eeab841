"""Licences as SPDX expressions (``license-expression``): ``MIT``, ``CC-BY-4.0 AND CC-BY-NC-4.0``,
``(Apache-2.0 OR MIT)``, ``GPL-2.0-only WITH Classpath-exception-2.0``.

For a use that a set of licences forbids: every operand of an ``AND`` applies (one forbidden operand forbids
the whole), an ``OR`` is satisfied by any operand (forbidden only when every choice is), a ``WITH`` exception
is judged by its licence. An expression that does not parse, or that names a licence the SPDX list does not
know (a ``LicenseRef-`` too), cannot be judged when that licence decides: ``None``.
"""

from __future__ import annotations

import functools
from collections.abc import Set
from typing import Any


@functools.lru_cache(maxsize=1)
def _licensing() -> Any:
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> Any:
    """The parsed expression, or None when it is not one (unknown ids are kept as ``LicenseRef``-like symbols)."""
    try:
        return _licensing().parse(text, validate=False, strict=False)
    except Exception:  # noqa: BLE001 - license-expression's parse errors: the expression cannot be judged
        return None


def _allows(node: Any, forbidden: Set[str]) -> bool | None:
    """Three-valued: True allowed, False forbidden, None cannot be told (an unknown licence decides)."""
    from license_expression import AND, OR, LicenseSymbol, LicenseWithExceptionSymbol

    if isinstance(node, LicenseWithExceptionSymbol):
        return _allows(node.license_symbol, forbidden)
    if isinstance(node, LicenseSymbol):
        if str(node.key).lower() in forbidden:
            return False
        return None if _licensing().unknown_license_keys(node) else True
    if isinstance(node, (AND, OR)):
        results = [_allows(a, forbidden) for a in node.args]
        decisive = not isinstance(node, AND)  # AND: one forbidden operand decides; OR: one allowed one
        if decisive in results:
            return decisive
        return None if None in results else not decisive
    return None


def allows(text: str, forbidden: Set[str]) -> bool | None:
    """Whether the licence expression ``text`` allows a use that the (lower-case) ids in ``forbidden`` forbid;
    None when it cannot be told (not an SPDX expression, or an unknown licence decides)."""
    expr = parse(text.strip())
    if expr is None:
        return None
    return _allows(expr, {f.lower() for f in forbidden})


def operands(text: str) -> list[str]:
    """The licence ids an expression names (for reports), or the text itself when it does not parse."""
    expr = parse(text.strip())
    if expr is None:
        return [text]
    return sorted({str(s.key) for s in _licensing().license_symbols(expr)})
