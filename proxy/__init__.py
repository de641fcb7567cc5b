"""SonicShield: a reverse proxy that shields musicians' masters from AI-training crawlers."""

__version__ = "0.2.0"
