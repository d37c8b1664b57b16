"""Against the paper and its authors: Table 1's bound (bound), Tables 2 and 3 in one command
(reproduce), and per-image agreement with the authors' released outputs (compare)."""
