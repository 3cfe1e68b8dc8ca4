"""Example model training pipelines."""
