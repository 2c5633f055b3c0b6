"""Exceptions raised by morpho's data layer."""

__all__ = ["DataError"]


class DataError(ValueError):
    """Input data that morpho cannot use.

    The message always names the file, dataset key or catalog column at fault,
    says what is wrong with it and, where there is one, what to do instead.
    """
