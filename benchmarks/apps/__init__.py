"""The apps that cabbage-supervisor runs during the benchmarks."""
