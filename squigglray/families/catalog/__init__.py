"""Importing this package registers every family. One module per target type."""

from squigglray.families.catalog import (  # noqa: F401  (registers on import)
    amgm,
    arithmetic,
    counting,
    divisibility,
    equations,
    functional,
    group_theory,
    invariants,
    modular,
    recurrences,
)
