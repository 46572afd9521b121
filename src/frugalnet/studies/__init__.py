"""One runner for every study: configs, run folders, resumable units, the shared training loop."""
from frugalnet.studies.registry import StudyConfig, StudySpec, available_studies, get_study, register_study
from frugalnet.studies.runner import RunContext, RunResult, load_run_config, resume_run, run_study
from frugalnet.studies.training import FitConfig, evaluate, fit, predict

__all__ = ["StudyConfig", "StudySpec", "available_studies", "get_study", "register_study", "RunContext",
           "RunResult", "load_run_config", "resume_run", "run_study", "FitConfig", "evaluate", "fit", "predict"]
