"""Fault tests: runs killed with SIGKILL in a subprocess, then checked against uninterrupted ones."""
