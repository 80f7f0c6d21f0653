"""Helpers shared by the tests: which PostgreSQL to use and how to reach it."""
