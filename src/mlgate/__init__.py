"""mlgate: machine-learning models over HTTP behind built-in auth, audit and limits."""

__version__ = "0.1.0"
