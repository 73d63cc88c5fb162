"""Policy: load policies/*.yml and decide, per field, who may do what for which purpose."""

from server.policy.engine import FieldDecision, FieldSpec, PolicySet, Purpose, RetentionRule, RevealReason
from server.policy.loader import PolicyError, load_policies

__all__ = ["FieldDecision", "FieldSpec", "PolicyError", "PolicySet", "Purpose", "RetentionRule", "RevealReason",
           "load_policies"]
