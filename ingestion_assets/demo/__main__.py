"""python -m ingestion_assets.demo DIR [--http-port PORT]: write the demo master sheet and files."""

from .files import main

main()
