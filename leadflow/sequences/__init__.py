"""Sequences: their content model (steps, waits, moments, exits) and `leadflow simulate`. The workflow
that runs one is `workflows/sequence.py`; its activities `activities/sending.py`."""
