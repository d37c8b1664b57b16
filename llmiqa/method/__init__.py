"""The paper's method, pure (no model, no I/O): the quality standard and its prompts
(standards), Algorithm 1's regions and the views shown (regions), readouts and the score
(aggregate), and one image's ratings and scores (results)."""
