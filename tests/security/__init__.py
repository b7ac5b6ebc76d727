"""Attack reproductions (issue 19): each test replays an attack on loopback, bounded in time."""
