"""Benchmark runs: score a dataset into a run folder (evaluate), then ablate from what is
stored (ablate). A run folder's configuration is in `config`, its files in `files`, how its
outputs are published in `publish`, and its lock in `lock`.

A run folder holds everything needed to resume, recompute and report:

    config.json       the dataset and every scoring option (resolved), and the run's id
    store.sqlite      masks and ratings (unless --store points elsewhere): the resume point
    results.jsonl     one ImageResult per image with its MOS: every rating kept
    ratings.npz       the same ratings as arrays (images x views x models x K): ablations
    results.csv       one row per image: image, mos, score, spread, s_global, s_local,
                      regions, error
    metrics.json      SRCC, KRCC, PLCC (raw and after the logistic fit), RMSE, intervals,
                      work done, time and memory
    invocations.jsonl one line per `llmiqa eval` on this folder (time, work, finished or not)
    report.md/.html   the metrics, plots and example images (see report.py), figures/
    current           -> published/<run id>-...: the outputs above are links through it

What it guarantees: a run's outputs are published as one unit when it finishes (written
into a new folder, switched in with one rename; see `publish`), and every output names
the run id of the config it belongs to; a run that fails or is interrupted leaves the
previous outputs as they were (its ratings are in the store). A finished run with other
options is replaced only when asked (`--overwrite`). Only one process writes a run
folder at a time (shards, which only fill the store, excepted).

The name contract with the report: results carry the sample's image name (relative to
the dataset's image folder) as `ImageResult.name`.
"""
