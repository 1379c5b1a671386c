"""numpy example: a tiny MLP with fixed, seeded weights, served as a block."""
