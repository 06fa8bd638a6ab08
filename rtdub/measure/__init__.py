"""Measurement: evaluation, scores, benchmarks and samples."""
