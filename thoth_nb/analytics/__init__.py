"""Analytics over recorded events: DataFrames (frames.py) and audit helpers."""
