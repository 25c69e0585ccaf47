"""Error types shared across the core. No pipeline imports, so detectors can raise them too."""


class DataError(ValueError):
    """Input that cannot be used, or output that cannot be written; the message says which file, column or row, and what was expected."""
