"""Ingest: raw channel records -> validated canonical events, or dead letters."""
