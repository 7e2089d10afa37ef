"""The feature-view contract: what a model's data is (`features/*.yaml`) and the rules rows
must follow. Every other part reads a view through this package and nothing else names a
feature."""
