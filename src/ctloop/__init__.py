"""ctloop: a continuous-training loop (MLOps level 1) over a feature store, MLflow and BentoML."""

__version__ = "0.1.0"
