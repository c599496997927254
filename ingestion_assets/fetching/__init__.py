"""Fetching a supplier's file byte for byte: HTTP(S), Google Sheets export, local files.

Plain code, no Dagster: the assets call `SourceFetcher.fetch`.
"""
