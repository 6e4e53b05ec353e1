"""Our Ray Serve request routers hand each chosen replica to the very call it was chosen for.

Both route calls that name a `target_replica` (the router deployment's choice of LLM replica, or
the ingress replica holding a request's stream). Ray Serve's FIFOMixin would give a replica chosen
for one pending call to the oldest pending call instead; behind a burst that sent calls to replicas
nobody chose for them (a CI run saw a call meant for a survivor go to a killed replica)."""
from ray.serve._private.request_router.request_router import FIFOMixin
from ray.serve.request_router import RequestRouter

from serve_app.routing.least_outstanding_tokens import LeastOutstandingTokensRouter
from serve_app.routing.targeted import TargetedRequestRouter


def test_routers_match_each_chosen_replica_to_its_own_call():
    for router in (LeastOutstandingTokensRouter, TargetedRequestRouter):
        assert router._fulfill_next_pending_request is RequestRouter._fulfill_next_pending_request, router
        assert router._fulfill_next_pending_request is not FIFOMixin._fulfill_next_pending_request
