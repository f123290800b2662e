"""Names vulture (at 80% confidence) reports as unused that are used: each with its reason.

Passed to vulture next to stella_bundle by tests/foundation/test_dead_code.py; vulture counts a
name used here as used. Add an entry only for a false positive, never to silence dead code.
"""

from stella_bundle.cli import observations

# `stella observations` subcommands register themselves on `observations.app` when imported:
# the import is the use (side effect), nothing reads the module name afterwards.
observations.observations_import  # noqa: B018
observations.observations_query  # noqa: B018
observations.observations_store  # noqa: B018
observations.observations_timeline  # noqa: B018
