"""DMPT (placeholder: being written; registers its model name when done)."""
