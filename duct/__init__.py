"""duct: a monitoring agent and event router built on Twisted."""

__version__ = "2.0.0.dev0"
