"""``reidprep masks``: foreground masks per triplet (SAM2, or a classical thermal baseline)."""
