"""tapevault: a self-hostable vault for conversation audio, with signed Range-correct URLs."""

__version__ = "0.1.0"
