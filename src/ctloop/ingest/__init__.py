"""Getting rows into the feature store: files (CSV, Parquet), the synthetic stream and
sample datasets, all through the view's validation."""
