"""Batch screening of anonymised cohorts: streaming, parallel, nothing lost."""
