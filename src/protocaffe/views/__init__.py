"""Views of a net for people: the per-layer table (`inspect`) and the picture (`graph`)."""
