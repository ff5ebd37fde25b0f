"""Benchmarks behind ``lipcast bench``; each prints JSON figures measured in one run."""
