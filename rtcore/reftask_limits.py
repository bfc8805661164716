"""Limits of the built-in reference task (include/rtcore/reftask.h), without
numpy: the client-side trajectory checks and the agent's settings use them.
tests/rtcore/test_reftask.py checks them against the header."""

NAME = "reftask"
MAX_JOINTS = 8
MAX_WAYPOINTS = 64
