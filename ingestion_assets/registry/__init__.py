"""The master sheet: where it is read from, how its rows become suppliers."""
