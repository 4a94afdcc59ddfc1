"""Rule files: the condition language, the loader and the load-time checks."""
