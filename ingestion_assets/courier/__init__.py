"""Per-supplier assets: raw_download → shared_file (→ ml_analysis_result)."""
