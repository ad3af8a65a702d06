"""What an observed Order asks of its saga: the event, if any, that its object implies.

Pure functions of the object as the apiserver shows it (no I/O), so the
operator is level-triggered: whatever was missed while it was down is derived
again from the object itself on the next look.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from vyapaar_operator import saga

RESUME_ANNOTATION = "vyapaar.dev/resume"
"""Set (to any value) on an Order in CompensationFailed, after repairing the cause, to resume."""


def pause_asked(obj: Mapping[str, Any]) -> bool:
    """``spec.paused``, unless the Order is being deleted: a deletion ends a pause (the Order
    must be able to go: its finalizer waits for the saga, and a paused saga never ends)."""
    return (bool((obj.get("spec") or {}).get("paused"))
            and not obj.get("metadata", {}).get("deletionTimestamp"))


def spec_of(obj: Mapping[str, Any]) -> saga.OrderSpec:
    """The Order's spec as the saga sees it (``paused`` as :func:`pause_asked` says)."""
    spec = saga.OrderSpec.from_manifest(obj.get("spec") or {})
    return replace(spec, paused=False) if spec.paused and not pause_asked(obj) else spec


def implied_event(
    obj: Mapping[str, Any], state: saga.SagaState, now: datetime, *, first_sight: bool
) -> saga.Event | None:
    """The event the object's spec and metadata imply for `state`, or None.

    `first_sight` is true the first time this operator process sees the object
    (after its start): in-flight commands are then re-sent (the status is the
    operator's outbox, and a crash may have come between write and publish).
    """
    meta = obj.get("metadata", {})
    spec = obj.get("spec", {})
    if state.phase is saga.Phase.PENDING and not meta.get("deletionTimestamp"):
        return saga.Start(now=now)  # new, or queued behind the in-flight limit
    if state.phase == saga.Phase.COMPENSATION_FAILED and RESUME_ANNOTATION in (
        meta.get("annotations") or {}
    ):
        return saga.Resume(now=now)
    if meta.get("deletionTimestamp") and not state.cancel_requested and not state.is_terminal:
        return saga.Deleted(now=now)
    if spec.get("cancel") and not state.cancel_requested:
        # Also after the saga finished: a Completed order records the refusal.
        return saga.CancelRequested(now=now)
    if first_sight and not state.is_terminal:
        return saga.Recover(now=now)
    if pause_asked(obj) != state.is_paused and not state.is_terminal:
        return saga.PauseChanged(now=now)
    return None
