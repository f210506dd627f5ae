"""Database and cache servers: PostgreSQL, MySQL/MariaDB, memcached."""
