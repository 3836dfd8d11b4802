"""The accounts domain: pure rules, no I/O."""
