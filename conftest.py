"""Fixtures shared by every test suite in the workspace."""

pytest_plugins = ["backhaul_devstack.pytest_plugin"]
