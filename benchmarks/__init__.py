"""Measured figures of PoD Grid (run each module as a script)."""
