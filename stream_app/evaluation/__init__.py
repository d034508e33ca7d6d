"""Offline evaluation: datasets, the shared judging protocol, eval, replay, drift."""
