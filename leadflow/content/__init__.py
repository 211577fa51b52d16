"""Content: loading and checking the marketer's files (YAML with line numbers, templates in a
sandbox, lint, conditions). Each content model is in its domain (`leadflow/scoring/model.py`, …)."""
