"""Distributed indexing on Ray."""
