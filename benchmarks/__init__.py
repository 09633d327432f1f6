"""Benchmarks: scripts that print a table (and save CSV + plot), and the code only they use (`lib`)."""
