"""Sources for Python application servers."""
