"""Running whitelisted scripts in rootless Podman."""
