"""Pure functions over frames and arrays shared by training, serving and monitoring: a
model's output by label kind, its metrics, and distribution statistics. No I/O."""
