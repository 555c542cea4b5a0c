"""Mutation testing of the modules that keep mail and secrets safe (``make mutation``; see README)."""
