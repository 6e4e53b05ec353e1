"""Ray errors that mean the actor behind a call is gone (the caller may re-route)."""
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

REPLICA_LOST = (ActorDiedError, ActorUnavailableError, RayActorError)
