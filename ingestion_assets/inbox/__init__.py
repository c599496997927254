"""Hand-in of a file: drop it into INBOX_DIR/<supplier key>/ and the courier runs it."""
