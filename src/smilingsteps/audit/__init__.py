"""Audit log: an append-only, hash-chained record of security-relevant actions."""
