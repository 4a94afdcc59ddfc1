"""Evaluators: the durable-rules production path and the plain-Python reference."""
