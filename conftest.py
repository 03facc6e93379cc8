"""Fixtures shared by ``tests/`` and ``integration/``: the throw-away servers of the harness."""

pytest_plugins: list[str] = ["tests.harness.mariadb", "tests.harness.slapd"]
