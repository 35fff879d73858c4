"""Identity, signing keys and tokens, the audit chain."""
