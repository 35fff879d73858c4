"""Herald's asyncio runtime: journal, rule runs, tasks, sandbox, audit, API and CLI.

Exceptions: every error this package raises on purpose derives from `engine.errors.HeraldError`.
"""
