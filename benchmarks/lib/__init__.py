"""Code only the benchmarks use: the Open Bandit loader, click model and off-policy estimates, the vector-index
benchmark, the two-stage evaluation."""
