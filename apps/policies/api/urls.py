from rest_framework.routers import DefaultRouter

from apps.policies.api.views import (
    PolicyExecutorViewSet,
    PolicyFunctionViewSet,
    PolicyGraphViewSet,
    PolicyJobViewSet,
    PolicyRuleViewSet,
)

router = DefaultRouter()
router.register("policies", PolicyRuleViewSet, basename="policy")
router.register("policy-executors", PolicyExecutorViewSet, basename="policy-executor")
router.register("policy-jobs", PolicyJobViewSet, basename="policy-job")
router.register("policy-functions", PolicyFunctionViewSet, basename="policy-function")
router.register("policy-graphs", PolicyGraphViewSet, basename="policy-graph")
urlpatterns = router.urls
