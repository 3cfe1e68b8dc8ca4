"""The bottom layer: helpers every other part may use (no imports from the rest of the package)."""
