"""Demo data for `make dev`: a master sheet and suppliers' price lists, generated on first start."""
