"""Speed and memory benchmarks (not part of the installed package)."""
