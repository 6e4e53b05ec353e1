"""Ray errors that mean the actor behind a call is gone (the caller may re-route), and ours."""
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

REPLICA_LOST = (ActorDiedError, ActorUnavailableError, RayActorError)


class ReplicaFailed(RuntimeError):
    """Raised by the router when the LLM replica running a request died, so that the ingress can
    tell it from the router itself dying (which reaches it as one of `REPLICA_LOST`)."""


class EngineDied(RuntimeError):
    """An LLM replica's answer to a call whose engine died before any of its response was sent: the replica
    is as good as gone (its health check fails next, and Ray Serve replaces it), so the router takes it as
    lost and the ingress re-routes the request, as it does when the replica's actor is gone."""


class MisroutedCall(RuntimeError):
    """An LLM replica's answer, by pull, to a call meant for another replica (`target_replica`): the LLM
    replicas' request router sends such a call elsewhere when its target has left its list (it died, or it
    is draining). By pull the ingress reads a request's parts from the replica it chose and may hold no
    stream to this one: run here, the parts would wait for a reader that never comes (30 s, then 503).
    Refused at once, the ingress takes the target as lost and re-routes the request."""
