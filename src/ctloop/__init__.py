"""ctloop: a continuous-training loop (MLOps level 1) over a feature store, MLflow and BentoML.

Imports sit at module level. The few inside functions are marked with their reason:
(a) DAG files and `ctloop.orchestration` are imported at Airflow parse time, every few
seconds, so pandas, MLflow, SQLAlchemy and the Airflow providers load only when a task
runs (and Airflow itself only under Airflow, since importing it loads its configuration);
(b) the CLI keeps `ctloop --help` fast; (c) MLflow, CatBoost, matplotlib and Airflow are
heavy and needed only on some paths of an otherwise light module.
"""

__version__ = "0.1.0"
