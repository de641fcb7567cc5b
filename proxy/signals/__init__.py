"""The individual request signals; proxy/classify.py combines them into Signals."""
