"""The policies system: registry, execution in five modes, built-in policies."""

from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "apps.policies"
    verbose_name = "Policies"

    def ready(self) -> None:
        # Code that builds a LocalPolicyEvaluator without a resolver (any app, any Django
        # process) reads policy records from this registry.
        from apps.policies import runtime
        from block_sdk.policy_runtime.evaluator import set_default_resolver

        set_default_resolver(runtime.resolver)
