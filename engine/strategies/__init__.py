"""Strategies: they see market events and a read-only position view, never a broker."""
