"""Herald's built-in integrations; each sub-package is found through the `herald.integrations` entry points."""
