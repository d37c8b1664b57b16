"""SAM2's automatic mask generator, the twin of raters/: the settings (masks), the mask
bookkeeping as pure functions (amg), the generator on transformers' Sam2Model and its spec
(generator), and original .pt checkpoints converted to it (original)."""
