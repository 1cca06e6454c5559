"""MLflow, as the project records runs in it; the one owner of that record.

- ``schema``: every tag key and value and every artifact path the project writes and reads, and
  the default tracking URI.
- ``store``: connecting to a tracking URI, experiments, runs found by key (a rerun reuses its run),
  params, metrics, parent and run lookups, retrying while a tracking server is away.
- ``metrics_log``: rank 0's exactly-once metrics writer.

Callers write ``from orchestrator import tracking`` and use ``tracking.<name>``.
"""

from orchestrator.tracking.metrics_log import MetricsLog
from orchestrator.tracking.schema import (
    PARENT_RUN_ID, RUN_NAME, RUN_KEY, CONFIG_HASH, RETIRED, DIVERGED, CHECKPOINT_FALLBACK, ERROR, ATTEMPT_TAGS,
    KIND, ABLATION, ENSEMBLE, EVALUATION, REPORT, PARENT_KINDS, MODEL, DEPTH, RESIDUAL, SHORTCUT, DATASET,
    RECIPE, GIT_COMMIT, ABLATION_NAME, MEMBERS, MEMBERS_LIMIT, VIEW, ENSEMBLE_PARENT, REPORT_PARENT,
    REPORT_FILTER, REPORT_SCREENSHOT, WORKER_STARTS, RESUMED_FROM_EPOCH, CHECKPOINT_FILE, CHECKPOINT_LABELS, MODEL_ARTIFACT, RESULTS_FOLDER,
    REPORT_FOLDER, ENSEMBLE_FOLDER, PROBABILITIES_FILE, SUMMARY_FILE, PROBABILITIES_ARTIFACT,
    checkpoint_folder, checkpoint_artifact, runs_uri, metric_name, member_metric, member_tag, member_run_ids,
    kind_of, is_training_run, run_name, training_tags, default_tracking_uri)
from orchestrator.tracking.store import (DRIVER_PACKAGES, PARAM_VALUE_LIMIT, PATIENCE_ENV, Metric, MlflowClient,
                                         MlflowException, TrackingUnavailable, child_runs, connect,
                                         ensure_experiment, fail_fast, find_parent, find_run, finish, flatten,
                                         get_or_create_run, get_run, git_commit, is_transient, log_metrics,
                                         log_params, lookup, now_ms, reopen, retire_run, retrying, search_all,
                                         set_tags, tracking_patience_s)

__all__ = [name for name in dir() if not name.startswith("_")]
