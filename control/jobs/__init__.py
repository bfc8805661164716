"""Trajectory jobs: their files, their queue and progress, and running them on the RT."""
