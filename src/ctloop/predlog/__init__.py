"""The prediction log: the row serving writes, the writer that gets every answered row into
the database without blocking a request, and the reads the monitor makes."""
