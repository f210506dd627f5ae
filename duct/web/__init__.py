"""duct's web server: statistics, metrics, health and the live event stream."""
