"""Reading prov4torch attributes off graph nodes and relations, shared by the hand-over formats (``export``,
``spdx``, ``openlineage``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..provjson import NAMESPACE
from .graph import Node


def values(node: Node, local: str) -> list[str]:
    """Every value of ``p4t:<local>`` as text."""
    return [str(v) for v in node.values(NAMESPACE + local)]


def first(node: Node, local: str) -> str | None:
    vals = values(node, local)
    return vals[0] if vals else None


def role_name(value: Any) -> str:
    """A usage role's local name (``p4t:training`` or its IRI -> ``training``)."""
    return str(value).rsplit("#", 1)[-1].rsplit(":", 1)[-1]


def licence_expression(licences: Iterable[str]) -> str | None:
    """One SPDX expression for several declared licences: all of them apply (AND), compound ones bracketed."""
    vals = sorted(set(licences))
    return " AND ".join(f"({v})" if " " in v else v for v in vals) if vals else None
