"""The Sonic-Sovereignty audit: `sonicshield audit URL` shows an artist how exposed their
recordings are to AI scraping and what to fix, against any site, with or without SonicShield
in front of it.

client.py: the polite client and discovery; checks.py: the findings and the score;
render.py: the terminal, JSON and HTML reports.
"""
