"""A researcher's own registry export: the mapping file that turns its columns and codes into
data-dictionary fields (spec.py), and the scan report that drafts one (inspect.py).

The mapping runs on raw rows, before validation: `load_mapping(path or dict)` gives a
`ColumnMapping` whose `apply(row)` is a pure function of one row.
"""

from engine.mapping.spec import ColumnMapping, MappingError, load_mapping

__all__ = ["ColumnMapping", "MappingError", "load_mapping"]
