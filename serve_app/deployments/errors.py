"""Ray errors that mean the actor behind a call is gone (the caller may re-route), and ours."""
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

REPLICA_LOST = (ActorDiedError, ActorUnavailableError, RayActorError)


class ReplicaFailed(RuntimeError):
    """Raised by the router when the LLM replica running a request died, so that the ingress can
    tell it from the router itself dying (which reaches it as one of `REPLICA_LOST`)."""
