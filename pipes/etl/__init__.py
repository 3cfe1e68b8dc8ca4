"""Example extract/transform pipelines."""
