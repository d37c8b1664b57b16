"""What scoring one image yields: the stored probabilities, and the scores derived from them.

An ImageResult keeps every probability, so any aggregation choice (readout, weighting, λ,
global/local, ensemble) is a pure recomputation: `result.rescored(Aggregation(...))`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from llmiqa import aggregate
from llmiqa.regions import Box


@dataclass(frozen=True)
class Aggregation:
    """The choices that turn probabilities into a score; none of them needs a model."""

    readout: str = "expected"
    weighting: str = "area"
    lam: float = 1.0
    view: str = "both"  # "global" and "local" are the paper's ablations 6 and 7
    complement: bool = True  # False: the complement region is left out (Table 5)

    def __post_init__(self) -> None:
        for value, allowed in (
            (self.readout, aggregate.READOUTS),
            (self.weighting, aggregate.WEIGHTINGS),
            (self.view, aggregate.VIEWS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown choice {value!r}; choose one of {allowed}")
        if self.lam < 0:
            raise ValueError(f"lambda must be >= 0, got {self.lam}")


@dataclass(frozen=True)
class RegionResult:
    kind: str  # "object" or "complement"
    box: Box  # the mask's box (x0, y0, x1, y1), original pixels
    area: int  # mask pixels: the weight of the area-weighted mean
    area_fraction: float
    probs: np.ndarray  # (models, K)
    scores: np.ndarray = field(default=None)  # (models,), filled by rescored()

    @property
    def score(self) -> float:
        return float(np.mean(self.scores))


@dataclass(frozen=True)
class ImageResult:
    name: str
    models: tuple[str, ...] = ()
    digest: str | None = None  # pixel hash of the image
    size: tuple[int, int] | None = None  # (width, height)
    global_probs: np.ndarray | None = None  # (models, K)
    regions: tuple[RegionResult, ...] = ()
    error: str | None = None
    aggregation: Aggregation = Aggregation()
    s_global: np.ndarray | None = None  # (models,)
    s_local: np.ndarray | None = None  # (models,), NaN without regions
    s_model: np.ndarray | None = None  # (models,)
    score: float | None = None  # the ensemble: mean of s_model

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def probs(self) -> np.ndarray:
        """Whole-image probabilities over the K levels, averaged over the models."""
        return self.global_probs.mean(axis=0)

    def rescored(self, aggregation: Aggregation) -> ImageResult:
        """The same ratings, aggregated another way (no model involved)."""
        if not self.ok:
            return replace(self, aggregation=aggregation)
        how = aggregation.readout
        s_global = aggregate.readout(self.global_probs, how)
        regions = tuple(replace(r, scores=aggregate.readout(r.probs, how)) for r in self.regions)
        counted = [r for r in regions if aggregation.complement or r.kind != "complement"]
        areas = [r.area for r in counted]
        s_local = np.array(
            [
                aggregate.local_score([r.scores[m] for r in counted], areas, aggregation.weighting)
                for m in range(len(self.models))
            ]
        )
        s_model = np.array(
            [
                aggregate.model_score(g, loc, aggregation.lam, aggregation.view)
                for g, loc in zip(s_global, s_local, strict=True)
            ]
        )
        return replace(
            self,
            regions=regions,
            aggregation=aggregation,
            s_global=s_global,
            s_local=s_local,
            s_model=s_model,
            score=aggregate.ensemble(s_model),
        )

    def only_model(self, index: int) -> ImageResult:
        """This result as if only model `index` had rated (for ensemble ablations)."""
        if not self.ok:
            return self
        pick = slice(index, index + 1)
        regions = tuple(replace(r, probs=r.probs[pick]) for r in self.regions)
        single = replace(
            self,
            models=self.models[pick],
            global_probs=self.global_probs[pick],
            regions=regions,
        )
        return single.rescored(self.aggregation)

    def to_dict(self) -> dict:
        """JSON-ready: everything needed to rebuild the result (see from_dict)."""
        if not self.ok:
            return {"name": self.name, "error": self.error}
        return {
            "name": self.name,
            "score": self.score,
            "levels": int(self.global_probs.shape[1]),
            "probs": self.probs.tolist(),
            "models": list(self.models),
            "digest": self.digest,
            "size": list(self.size),
            "global_probs": self.global_probs.tolist(),
            "s_global": self.s_global.tolist(),
            "s_local": [None if np.isnan(v) else v for v in self.s_local.tolist()],
            "s_model": self.s_model.tolist(),
            "aggregation": vars(self.aggregation),
            "regions": [
                {
                    "kind": r.kind,
                    "box": list(r.box),
                    "area": r.area,
                    "area_fraction": r.area_fraction,
                    "score": r.score,
                    "scores": r.scores.tolist(),
                    "probs": r.probs.tolist(),
                }
                for r in self.regions
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ImageResult:
        if data.get("error"):
            return cls(name=data["name"], error=data["error"])
        regions = tuple(
            RegionResult(
                kind=r["kind"],
                box=tuple(r["box"]),
                area=r["area"],
                area_fraction=r["area_fraction"],
                probs=np.asarray(r["probs"], dtype=np.float64),
            )
            for r in data["regions"]
        )
        raw = cls(
            name=data["name"],
            models=tuple(data["models"]),
            digest=data["digest"],
            size=tuple(data["size"]),
            global_probs=np.asarray(data["global_probs"], dtype=np.float64),
            regions=regions,
        )
        return raw.rescored(Aggregation(**data["aggregation"]))
