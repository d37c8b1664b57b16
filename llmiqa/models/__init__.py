"""Clean-room model code for checkpoints that transformers cannot load without remote code."""
