"""Shared pytest configuration."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

# Hypothesis profiles, chosen with HYPOTHESIS_PROFILE: "ci" (the default) keeps the fuzz tests
# bounded (a few minutes on 2 cores in all); "deep" is for long local runs. The example database
# lives in .hypothesis/ (gitignored), so shrunk failures are replayed locally first.
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    # No shrinking in CI: a failure is reported as found (shrinking can take minutes); rerun
    # locally with HYPOTHESIS_PROFILE=deep to shrink it.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
settings.register_profile(
    "deep",
    max_examples=1000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the golden files from the current generator (refused when CI is set)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--update-golden") and os.environ.get("CI"):
        raise pytest.UsageError("--update-golden refuses to run when CI is set")
