"""Data collators for concept-encoder objectives."""
