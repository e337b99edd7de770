"""The one exception the data layer raises for bad or missing input."""

from __future__ import annotations


class DataError(Exception):
    """Data that cannot be used as given.

    The message always names the file, folder or field at fault and what was expected there, so a researcher can
    fix the input without reading the code (e.g. ``/data/esc50/meta/esc50.csv: missing columns ['fold']; expected
    filename,fold,target,category,...``).
    """


__all__ = ["DataError"]
