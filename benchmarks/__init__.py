"""Benchmark scripts: each prints ratios or figures measured side by side in one run."""
