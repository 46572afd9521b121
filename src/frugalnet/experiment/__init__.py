"""The one runner every study uses: configs and the study registry, run folders with resumable units and the
report, and the shared training loop (`fit`, `evaluate`)."""
from frugalnet.experiment.registry import (StudyConfig, StudySpec, available_studies, get_study, register_study,
                                          study_for)
from frugalnet.experiment.runner import RunContext, RunResult, load_run_config, resume_run, run_study
from frugalnet.experiment.training import FitConfig, evaluate, fit, predict

__all__ = ["StudyConfig", "StudySpec", "available_studies", "get_study", "register_study", "study_for", "RunContext",
           "RunResult", "load_run_config", "resume_run", "run_study", "FitConfig", "evaluate", "fit", "predict"]
