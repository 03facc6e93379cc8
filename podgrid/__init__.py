"""The ``podgrid`` command and the Python client API users import.

Also home of the embedded local grid behind ``podgrid up`` and ``podgrid demo``.
"""

__all__: list[str] = []
