"""One `llmiqa eval` across many GPUs and nodes with Ray Data: workers compute, the driver
commits.

The store stays the single source of truth and the driver its only writer; Ray only fills
it. The driver runs in phases that pass values: `RayCluster.place` asks a worker how it
resolves the run's options (a Placement), the driver's Scorer is built with them, and
`RayCluster.fill` takes that Placement and the Scorer's seam (`Scorer.seam()`). Four phases:

1. decode: every image is decoded on the cluster (Ray tasks); the driver learns its
   content digest and size, nothing more;
2. masks: images whose masks the store lacks go to a pool of SAM2 actors; masks stream
   back and the driver commits each as it arrives;
3. ratings: the driver plans every rating from stored masks, without pixels
   (`Seam.requests`), asks the store which are missing and sends only those, in the chunks
   and order the single-process Scorer rates them, to a pool of rater actors per model
   (any backend: a RaterSpec is plain data, each actor loads its rater once); ratings
   stream back and are committed as they arrive;
4. collect: the unchanged single-process Scorer runs over the filled store and calls no
   model, so results, metrics and report come from the same code as without Ray, and
   results.csv is byte-identical to a single-process run by construction.

Ray restarts what dies (actors, tasks, a node's share of the work) and retries their units;
a ledger counts how often each unit was started, so a unit that keeps killing its worker
(an image that crashes the decoder or the model) stops the run with one line naming its
images after `retries` restarts, instead of being retried forever; and the loads that
began and never ended, so that actors that keep dying while they load their model (out of
memory) stop it too.

The driver plans and commits through the Scorer's seam and nothing else of it (its
requests per image, and its caches' missing and commit): dedupe, lookup and commit are the
single-process code, not a copy of it. `plan` holds the planning (no Ray), `workers` what
runs on the cluster, `cluster` the connection, the pools and the phases.

Dedupe, resume, ablations and the report are unchanged: a run killed anywhere keeps what
the driver committed, and a rerun (with or without Ray) sends out only what is missing.
Workers read the images, and local checkpoint folders, at the driver's paths: a shared
file system. A worker that cannot read an image the driver can read stops the run with
one line saying so; a worker whose checkpoint files differ from the driver's is refused.
"""
