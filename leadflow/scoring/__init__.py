"""Scoring: the score (a pure function), the scoring model marketers write, qualification and the score
ledger in the store, rescoring everyone, and points learned from history (`fit`)."""
