"""The store's dashboard: its page and files, and the query API behind it."""
