"""Helpers shared by the test tiers (fixtures live in `tests/conftest.py`).

Imported as `tests.support.<module>`, so a helper has one home instead of one test module
importing another: `paths` (the checkout), `databases` (throw-away MariaDB and PostgreSQL
databases), `world` (the typed world the integration tests build), `serving` (a real
`bentoml serve` and its requests), `airflow` (Airflow in a child process) and
`predictions` (logging a champion's answers as serving does).
"""
