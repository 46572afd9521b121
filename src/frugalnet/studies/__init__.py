"""The studies, one file each; every study registers itself with the experiment runner (frugalnet.experiment).

The runner's names are re-exported here for convenience: `from frugalnet.studies import run_study`.
"""
from frugalnet.experiment import (FitConfig, RunContext, RunResult, StudyConfig, StudySpec, available_studies,
                                  evaluate, fit, get_study, load_run_config, predict, register_study, resume_run,
                                  run_study)

__all__ = ["StudyConfig", "StudySpec", "available_studies", "get_study", "register_study", "RunContext",
           "RunResult", "load_run_config", "resume_run", "run_study", "FitConfig", "evaluate", "fit", "predict"]
