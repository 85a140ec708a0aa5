"""Hydra's Optuna sweeper, resumable: `search=optuna_lr` picks it (conf/search/optuna_lr.yaml).

The study lives in a database, `optuna.db` beside the MLflow store (src.sweep.study_storage) unless
`hydra.sweeper.storage` names another, and is named after the sweep's parent MLflow run
(`lr_search-<run id>`). A fresh sweep has a new parent, so it starts a new study, and two fresh
searches choose the same trials. A resumed sweep reopens its parent (src.sweep), so it loads its
study and runs only the trials still missing from `n_trials`.

Hydra imports every module under hydra_plugins/ to find its plugins, in every run: Optuna and
the project's modules are imported only when a search starts.
"""

from __future__ import annotations

import logging

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self._sampler_config = config.hydra.sweeper.sampler

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from hydra.utils import instantiate

        from src.sweep import study_storage, sweep_parent

        search, parent = self.sweeper, sweep_parent()
        if parent is None:  # run without src.sweep's callback: no sweep to tie a study to
            return super().sweep(arguments)
        search.storage = search.storage or study_storage()
        search.study_name = f"{search.study_name or 'study'}-{parent}"
        create_storage(search.storage)
        try:
            study = optuna.load_study(study_name=search.study_name, storage=search.storage)
        except KeyError:  # a fresh sweep
            return super().sweep(arguments)
        retried, complete = reopen_study(study)
        log.info("resuming Optuna study %s: %d of %d trials complete, %d stopped trial(s) tried again",
                 search.study_name, complete, search.n_trials, retried)  # fmt: skip
        search.n_trials = max(0, search.n_trials - complete)
        search.job_idx = complete  # jobs go on numbering where the stopped sweep's finished ones end
        seed = self._sampler_config.get("seed")
        if seed is not None:  # a new stream: the fresh search's seed would draw its first trials again
            search.sampler = instantiate(self._sampler_config, seed=seed + complete)
        return super().sweep(arguments)


def create_storage(url: str) -> None:
    """Create the study database at `url`, if it is new.

    Under SQLAlchemy 2 (which MLflow needs), Optuna 2.10 stamps a new database's schema version
    without committing it, then refuses the database as unversioned (`assert version is not None`).
    Created with autocommit, the stamp is kept; an existing database is left as it is.
    """
    from optuna.storages import RDBStorage

    RDBStorage(url, engine_kwargs={"isolation_level": "AUTOCOMMIT"}).engine.dispose()


def reopen_study(study) -> tuple[int, int]:
    """Mark the trials that a stopped sweep left RUNNING as FAIL and queue their params again, so they
    are tried first (a job that had finished is then not run again: src.sweep.earlier_result).
    Returns (trials queued again, trials COMPLETE): only COMPLETE trials count towards n_trials."""
    import warnings

    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState

    stopped = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stopped:
        study.tell(trial.number, state=TrialState.FAIL)
        with warnings.catch_warnings():  # enqueue_trial is "experimental" in Optuna 2.10
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.enqueue_trial(trial.params)
    return len(stopped), len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
