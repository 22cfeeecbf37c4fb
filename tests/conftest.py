"""Shared pytest configuration: Hypothesis profiles.

``HYPOTHESIS_PROFILE=ci`` (the default) is deterministic and quick;
``HYPOTHESIS_PROFILE=fuzz`` runs ``FUZZ_EXAMPLES`` (default 200000) examples per test.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=100,
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200000")),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: The database fixtures (``database_uri``, ``database``) shared by the storage and server tests.
pytest_plugins = ["tests.databases"]
