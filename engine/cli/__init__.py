"""The `herald` command line (the composition root): `engine.cli.main:main` is the console script."""
