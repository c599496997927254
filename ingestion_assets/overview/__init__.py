"""One screen in the Dagster UI: every supplier's phase and why (the supplier_overview asset)."""
