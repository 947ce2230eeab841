"""Governance of data: the tag vocabulary and its validation, lineage across runs (cards),
the policy format and its evaluator, and the runtime gate that enforces a policy."""
