"""Renderers: a Result as text for a clinician, or JSON for their systems."""
