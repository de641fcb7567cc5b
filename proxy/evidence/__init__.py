"""The evidence log: every encounter that matters, hash-chained on disk (chain.py), written off
the hot path (writer.py), checked (verify.py) and summarised for a rights holder (report.py)."""
