"""The hand-off onto the shared volume: atomic files, sidecars, reuse, clean-up."""
