"""Markdown tables, JSON summaries and matplotlib figures of experiment results."""
