"""Small helpers shared by every specprobe package (atomic I/O, hashing, provenance)."""
