"""The network dashboard's pages, mounted at the site root (``/`` is the overview)."""

from django.urls import path
from django.views.generic import RedirectView

from apps.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.OverviewView.as_view(), name="overview"),
    path("dashboard/", RedirectView.as_view(pattern_name="dashboard:overview"), name="home"),
    path("dashboard/login/", views.DashboardLoginView.as_view(), name="login"),
    path("dashboard/logout/", views.DashboardLogoutView.as_view(), name="logout"),
    path("dashboard/clusters/", views.ClusterListView.as_view(), name="clusters"),
    path(
        "dashboard/clusters/<str:cluster_id>/",
        views.ClusterDetailView.as_view(),
        name="cluster",
    ),
    path("dashboard/blocks/", views.BlockListView.as_view(), name="blocks"),
    path("dashboard/blocks/<str:block_id>/", views.BlockDetailView.as_view(), name="block"),
    path("dashboard/vdags/", views.VDagListView.as_view(), name="vdags"),
    # path: a vDAG name may contain "/" (apps.core.uris.NAME_RE).
    path("dashboard/vdags/<path:vdag_uri>/", views.VDagDetailView.as_view(), name="vdag"),
    path("dashboard/tasks/", views.TaskListView.as_view(), name="tasks"),
]
