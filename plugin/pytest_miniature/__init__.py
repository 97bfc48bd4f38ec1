"""The pytest adapter of pytest-miniature; the library lives in ``miniature``."""
