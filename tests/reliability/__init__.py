"""Reliability proof: the fault-injection soak, fuzzing with hypothesis, and security checks."""
