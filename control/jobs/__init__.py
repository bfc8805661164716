"""Trajectory jobs: their files (trajectory), the pure state machine of one job
(machine), its SQLite persistence (store) and the runner that hands jobs to
the RT and follows them (runner)."""
