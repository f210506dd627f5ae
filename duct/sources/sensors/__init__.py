"""Sources that read environmental sensors attached to this machine."""
