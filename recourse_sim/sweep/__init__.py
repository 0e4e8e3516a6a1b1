"""Sweeps at scale: job identities, job states, and collecting a sweep's results.

A sweep's jobs live in directories named by their result-key overrides
(:func:`recourse_sim.keys.job_key`), so a re-launched sweep finds them again; each finished job
holds a done marker. :func:`sweep_jobs` reads the state of every planned job from the files
alone, and :func:`collect` merges the results and lists what is left to run.
"""

from recourse_sim.sweep.collect import Collection, collect
from recourse_sim.sweep.jobs import JobState, planned_jobs, sweep_jobs

__all__ = ["Collection", "JobState", "collect", "planned_jobs", "sweep_jobs"]
