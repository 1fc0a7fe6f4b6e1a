"""Graph -> Graph passes and the pipeline that runs them."""

from protocaffe.passes.pipeline import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE, Pass, run_pipeline

__all__ = ["DEFAULT_PIPELINE", "OPTIMIZE_PIPELINE", "Pass", "run_pipeline"]
