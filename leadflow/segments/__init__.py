"""Segments: their content model, the rules (shared with sequence branches) and their evaluation."""
