"""The AWS side of the composition root: Lambda events in, the cached AWS runtime (DESIGN §1)."""
