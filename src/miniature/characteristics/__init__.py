"""The model characteristics: one module each (the maths, the check, its assertion, how it renders),
listed by :mod:`.registry` alone. Their public names are exported once, by the ``miniature`` package.

Importing this package loads no characteristic: the registry must be importable without numpy, since
the pytest plugin and ``import miniature`` consult it.
"""
