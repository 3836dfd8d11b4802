"""One module per producing service."""
