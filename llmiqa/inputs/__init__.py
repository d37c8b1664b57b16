"""What llmiqa reads: images, decoded robustly and named by their pixels (images), and the
benchmarks' label files in their official layouts (datasets)."""
