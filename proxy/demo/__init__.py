"""The embedded demo store."""
