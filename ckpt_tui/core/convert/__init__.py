"""Conversions between checkpoint formats. One module per target, one job runner for all."""
