"""Continuous training: the data gate, fitting, the model gate, the infra check and
promotion, as steps of one run that any orchestrator (Airflow, the CLI) can call."""
