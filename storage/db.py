"""The trace store's functions in one namespace (``from storage import db``); each lives in the module of
its job: :mod:`storage.engine` (opening, migrating, transactions), :mod:`storage.runs` (runs and hops),
:mod:`storage.feedback` (judgements and rewards), :mod:`storage.training_runs`, :mod:`storage.urls`
(database URLs, shown without their password) and :mod:`storage.probe` (read-only looks at a SQLite file
before anything writes to it)."""

from __future__ import annotations

from storage.engine import (
    MIGRATIONS_DIR,
    alembic_config,
    current_revision,
    downgrade_store,
    engine_of,
    head_revision,
    make_engine,
    retry_busy,
    session_factory,
    session_scope,
    upgrade_store,
    write_connection,
    write_problem,
)
from storage.errors import StoreError
from storage.feedback import (
    add_feedback,
    add_reward,
    feedback_for,
    has_gold_answer,
    label_answers,
    latest_feedback,
    newest_gold_feedback,
    recent_costs,
    rewards_for,
)
from storage.probe import SQLITE_MAGIC
from storage.runs import (
    add_hop,
    checkpoint_thread_id,
    claim_run,
    create_run,
    finish_run,
    get_run,
    hop_sums,
    list_runs,
    mark_orphaned,
    model_usage,
)
from storage.training_runs import (
    create_training_run,
    finish_training_run,
    get_training_run,
    log_training_step,
    training_run_for_checkpoint,
)
from storage.urls import ACCEPTED, shown_url, store_files

__all__ = [
    "ACCEPTED",
    "MIGRATIONS_DIR",
    "SQLITE_MAGIC",
    "StoreError",
    "add_feedback",
    "add_hop",
    "add_reward",
    "alembic_config",
    "checkpoint_thread_id",
    "claim_run",
    "create_run",
    "create_training_run",
    "current_revision",
    "downgrade_store",
    "engine_of",
    "feedback_for",
    "finish_run",
    "finish_training_run",
    "get_run",
    "get_training_run",
    "has_gold_answer",
    "head_revision",
    "hop_sums",
    "label_answers",
    "latest_feedback",
    "list_runs",
    "log_training_step",
    "make_engine",
    "mark_orphaned",
    "model_usage",
    "newest_gold_feedback",
    "recent_costs",
    "retry_busy",
    "rewards_for",
    "session_factory",
    "session_scope",
    "shown_url",
    "store_files",
    "training_run_for_checkpoint",
    "upgrade_store",
    "write_connection",
    "write_problem",
]
