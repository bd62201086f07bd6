"""scikit-learn's fit callbacks (``sklearn.callback``, ``search.set_callbacks(...)``) around a
search: the same task tree as scikit-learn's searches (fit > search > one task per candidate x
fold, and the refit), or a context that does nothing where scikit-learn has no callbacks.

Under MPI every rank runs the search, so each rank calls the hooks of the fit, the search and
the refit; a task's hooks are called on the ranks of the group that runs it.
"""

from __future__ import annotations

from contextlib import contextmanager


class Silent:
    """A callback context without callbacks (scikit-learn before callbacks)."""

    def subcontext(self, *args, **kwargs):
        return self

    def call_on_fit_task_begin(self, **kwargs):
        return self

    def call_on_fit_task_end(self, **kwargs):
        return False

    @contextmanager
    def propagate_callback_context(self, estimator):
        yield


def root_context(search, refit):
    """The search's root context (its ``setup`` hooks run here): the search, then the refit."""
    init = getattr(search, "_init_callback_context", None)
    return Silent() if init is None else init(max_subtasks=1 + (refit is not False))


def task_contexts(root, search, n_tasks):
    """(the search's context, begun, and one context per task), made before any task runs as
    scikit-learn makes them: the tasks are not sequential, each has its task id."""
    ctx = root.subcontext(task_name="search", max_subtasks=n_tasks, sequential_subtasks=False)
    ctx.call_on_fit_task_begin(estimator=search)
    return ctx, [ctx.subcontext(task_name="candidate-split-evaluation", task_id=t) for t in range(n_tasks)]
