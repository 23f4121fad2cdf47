"""Declared topology: topics and their layout, loaded from topologies/."""
