"""Planning a Ray run without Ray: what each phase sends, from the Scorer's seam.

The driver knows each image's digest and size (decoded on the cluster) and, after the
mask phase, its stored masks; the seam (`Scorer.seam()`) turns that into the very requests
a single process would make, chunk by chunk, and each model's cache says which it lacks
(`missing`): the jobs are those, in that order, so the workers' batches are the single
process's batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from llmiqa.errors import UsageError
from llmiqa.inputs.images import LoadedImage
from llmiqa.raters.base import Outcome, RatingRequest

if TYPE_CHECKING:
    import numpy as np

    from llmiqa.scoring.pipeline import Seam


@dataclass(frozen=True)
class Decoded:
    """What the driver learns about one image in phase 1."""

    path: str
    digest: str = ""
    size: tuple[int, int] = (0, 0)  # (width, height)
    error: str = ""  # the ImageError a worker met, when it could not decode it
    node: str = ""  # the IP of the node that decoded it


@dataclass(frozen=True)
class Job:
    """The missing ratings of one chunk of images, for one model, in the order the
    single-process Scorer rates them (so its batches are the same)."""

    images: tuple[tuple[str, str], ...]  # (path, digest)
    requests: tuple[RatingRequest, ...]  # without pixels: the worker decodes `images`
    unit: str = ""  # names it in the ledger


@dataclass(frozen=True)
class Done:
    """A worker's answer to one job, or the problem that stops the run."""

    outcomes: tuple[tuple[str, Outcome], ...] = ()  # (request key, outcome)
    problem: str | None = None
    worker: tuple[str, int] = ("", 0)  # (node id, pid)
    busy: float = 0.0  # seconds on this job: decoding its images and the model
    load: float = 0.0  # seconds the actor took to load its model
    # SeP-IQA's token weights, sent with an actor's first job that keeps top raw logits
    direction: np.ndarray | None = None


@dataclass(frozen=True)
class Undecoded:
    """Stands in for the pixels of an image that only the workers decoded: the collect
    pass reads its size alone, since everything it rates or segments is then stored."""

    path: str
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise UsageError(
            f"{self.path}: its pixels were needed after the Ray phases (the store lacks "
            "something the workers computed); rerun the same command"
        )


def undecoded(item: Decoded) -> LoadedImage:
    """An image as the driver holds it: its digest and size, pixels left on the workers."""
    return LoadedImage(item.path, Undecoded(item.path, *item.size), item.digest)


def plan(seam: Seam, decoded: Sequence[Decoded]) -> tuple[list[list[Job]], set[str]]:
    """Per model, the jobs: for each chunk of images the Scorer would score together, the
    requests its cache lacks and no earlier job holds, in the order it would rate them.
    Also the images whose regions could not be planned (their masks failed, or stored masks
    do not fit them): the collect pass reports them as the Scorer does.

    Planning computes nothing: masks the store lacks stop it."""
    jobs: list[list[Job]] = [[] for _ in seam.raters]
    unplanned: set[str] = set()
    sent: set[str] = set()
    size = seam.chunk_size
    for start in range(0, len(decoded), size):
        per_model: list[list[RatingRequest]] = [[] for _ in seam.raters]
        for item in decoded[start : start + size]:
            if item.error:
                continue
            image = undecoded(item)
            try:
                planned = seam.requests(image)
            except UsageError:
                raise
            except Exception:  # SAM2 failed on it, or stored masks of another shape
                unplanned.add(item.digest)
                continue
            for m, requests in enumerate(planned):
                per_model[m] += requests
        for m, rater in enumerate(seam.raters):
            missing = [r for r in rater.missing(per_model[m]) if r.key not in sent]
            if missing:
                unit = f"rating job {len(jobs[m]) + 1} of {rater.spec.model}"
                jobs[m].append(job(missing, unit, {d.digest: d.path for d in decoded}))
                sent.update(r.key for r in missing)
    return jobs, unplanned


def job(requests: list[RatingRequest], unit: str, paths: dict[str, str]) -> Job:
    """The requests without pixels, and the images they need (path, digest), in order."""
    images = dict.fromkeys(r.image for r in requests)
    return Job(
        tuple((paths[digest], digest) for digest in images),
        tuple(replace(r, source=None) for r in requests),
        unit,
    )
