"""Rendering results for people and machines."""
