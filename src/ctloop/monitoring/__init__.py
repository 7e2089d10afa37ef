"""The monitor: data drift, prediction drift and live-metric decay on the prediction log,
the drift report, and the decision to trigger retraining."""
