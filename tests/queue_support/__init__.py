"""Helpers for the job-queue tests: backends behind one harness, worker processes."""
