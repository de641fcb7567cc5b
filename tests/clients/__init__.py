"""Real listener programs for the tests (programs.py), and the command that records what
they send (capture.py)."""
