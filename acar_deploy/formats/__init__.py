"""On-disk formats: one typed owner class per file format (load validates, write is atomic)."""
