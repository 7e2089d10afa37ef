"""The glue Airflow's DAG files call: one function per task, each building its inputs from
the Airflow context and calling the library. Imports Airflow only inside functions."""
