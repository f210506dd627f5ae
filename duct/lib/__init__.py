"""Helpers that sources, outputs and the core share; `duct.utils` re-exports the public ones.

- `duct.lib.process`: run a process with a time limit (`fork`);
- `duct.lib.cache`: a small persistent dictionary;
- `duct.lib.http`: fetch URLs with treq: the `Client` behind ``self.http``,
  and `HTTP_CLIENT_OPTIONS`;
- `duct.lib.pluginhttp`: ``self.http`` on every plugin, built on first use;
- `duct.lib.tls`: client TLS options and their declared group;
- `duct.lib.json`: JSON that turns NaN and infinities into null;
- `duct.lib.lograte`: log a repeated message at most once in a while.
"""
