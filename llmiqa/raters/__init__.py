"""MLLM backends behind one contract (base), registered by name (registry), named before
loading by a RaterSpec (spec)."""
