"""The events the registry publishes about a node once its backends caught up."""

from __future__ import annotations

from registry_app.events import (
    BackendOutcome,
    DeregisteredPayload,
    ExpiredPayload,
    NodeDeregistered,
    NodeExpired,
    NodeRegistered,
    RegisteredPayload,
    RegistrationFailed,
    RegistrationFailedPayload,
)
from registry_app.writer import PendingRegistration, RegistrationOutcome

Announcement = NodeRegistered | NodeExpired | NodeDeregistered


def announcement(outcome: RegistrationOutcome) -> Announcement:
    """Tell the node what both backends now hold for it."""
    common = {"node_id": outcome.node_id, "correlation_id": outcome.correlation_id}
    if outcome.status == "expired":
        return NodeExpired(
            **common,
            payload=ExpiredPayload(
                node_type=outcome.node_type,
                generation=outcome.generation,
                **outcome.details,
            ),
        )
    if outcome.status == "deregistered":
        return NodeDeregistered(
            **common,
            payload=DeregisteredPayload(
                node_type=outcome.node_type, generation=outcome.generation
            ),
        )
    return NodeRegistered(
        **common,
        payload=RegisteredPayload(
            node_type=outcome.node_type,
            generation=outcome.generation,
            consul=BackendOutcome(ok=True),
            postgres=BackendOutcome(ok=True),
        ),
    )


def registration_failed(
    pending: PendingRegistration, error: Exception
) -> RegistrationFailed:
    """Tell the node a backend refused its registration for good."""
    return RegistrationFailed(
        node_id=pending.record.node_id,
        correlation_id=pending.correlation_id,
        payload=RegistrationFailedPayload(
            node_type=pending.record.node_type,
            generation=pending.generation,
            backend=getattr(error, "backend", "unknown"),
            detail=str(error)[:2048],
        ),
    )


def past_tense(announced: Announcement) -> str:
    """The word for an announcement in the registry's log."""
    if isinstance(announced, NodeExpired):
        return "expired"
    if isinstance(announced, NodeDeregistered):
        return "deregistered"
    return "registered"
