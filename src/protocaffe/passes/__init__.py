"""Graph -> Graph passes and the pipeline that runs them (see docs/architecture.md, "Adding a
pass")."""

from protocaffe.passes.pipeline import (
    DEFAULT_PIPELINE,
    LOWERING,
    OPTIMIZE_PIPELINE,
    Pass,
    run_pipeline,
)

__all__ = ["DEFAULT_PIPELINE", "LOWERING", "OPTIMIZE_PIPELINE", "Pass", "run_pipeline"]
