"""The web tier: POST a file, get the answer; browse every result."""
