"""The provisioning domain: pure rules, no I/O."""
