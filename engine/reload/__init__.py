"""Compiling rule files and hot reload."""
