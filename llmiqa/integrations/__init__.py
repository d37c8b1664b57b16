"""llmiqa inside other tools: a pyiqa-style metric (pyiqa) and a web page (demo)."""
