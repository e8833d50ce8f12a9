from tests.integration.conftest import engine, engine_url, hub  # noqa: F401  (same real hub fixtures)
