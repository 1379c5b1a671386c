"""Pages of the network dashboard: thin views over ``apps.dashboard.services``.

Every page needs a signed-in user (Django session). List pages take the same query-string
filters as the REST API, through the owning app's filterset; a filter value that does not
validate renders the page with the error and status 400 rather than ignoring it.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.mixins import LoginRequiredMixin
from django.db.models import QuerySet
from django.http import HttpResponse
from django.urls import reverse, reverse_lazy
from django.views.generic import TemplateView

from apps.blocks.filtersets import BlockFilterSet
from apps.blocks.models import Block
from apps.clusters.filtersets import ClusterFilterSet
from apps.clusters.models import Cluster
from apps.tasks.filtersets import TaskFilterSet
from apps.vdags.filtersets import VDagFilterSet
from apps.vdags.models import VDag

from . import services

LOGIN_URL = reverse_lazy("dashboard:login")


class DashboardView(LoginRequiredMixin, TemplateView):
    """A signed-in page of the dashboard; ``section`` marks the current tab."""

    login_url = LOGIN_URL
    section = ""
    title = ""
    status = 200

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(section=self.section, title=self.title)
        return context

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> HttpResponse:
        kwargs.setdefault("status", self.status)
        return super().render_to_response(context, **kwargs)


class FilteredListView(DashboardView):
    """A list page filtered by an app's filterset (``?status=failed&cluster=c1``)."""

    filterset_class: Any = None

    def base_queryset(self) -> QuerySet:
        raise NotImplementedError

    def filtered(self) -> tuple[QuerySet, Any]:
        filterset = self.filterset_class(self.request.GET, queryset=self.base_queryset())
        if filterset.is_valid():
            return filterset.qs, filterset
        self.status = 400
        return self.base_queryset().none(), filterset

    def filter_context(self, filterset: Any) -> dict[str, Any]:
        active = {k: v for k, v in self.request.GET.items() if v}
        return {"filters": active, "filter_errors": filterset.errors}


class OverviewView(DashboardView):
    template_name = "dashboard/overview.html"
    section = "overview"
    title = "Network overview"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(services.overview(self.request.user))
        return context


class ClusterListView(FilteredListView):
    template_name = "dashboard/cluster_list.html"
    section = "clusters"
    title = "Clusters"
    filterset_class = ClusterFilterSet

    def base_queryset(self) -> QuerySet:
        return Cluster.objects.all()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        queryset, filterset = self.filtered()
        rows, live_ok = services.cluster_rows(queryset)
        context.update(rows=rows, live_ok=live_ok, **self.filter_context(filterset))
        return context


class ClusterDetailView(DashboardView):
    template_name = "dashboard/cluster_detail.html"
    section = "clusters"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(services.cluster_detail(self.kwargs["cluster_id"]))
        context["title"] = f"Cluster {context['cluster'].pk}"
        return context


class BlockListView(FilteredListView):
    template_name = "dashboard/block_list.html"
    section = "blocks"
    title = "Blocks"
    filterset_class = BlockFilterSet

    def base_queryset(self) -> QuerySet:
        return Block.objects.all()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        queryset, filterset = self.filtered()
        context.update(rows=services.block_rows(queryset), **self.filter_context(filterset))
        return context


class BlockDetailView(DashboardView):
    template_name = "dashboard/block_detail.html"
    section = "blocks"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(services.block_detail(self.kwargs["block_id"]))
        context["title"] = f"Block {context['blk'].pk}"
        return context


class VDagListView(FilteredListView):
    template_name = "dashboard/vdag_list.html"
    section = "vdags"
    title = "vDAGs"
    filterset_class = VDagFilterSet

    def base_queryset(self) -> QuerySet:
        return VDag.objects.all()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        queryset, filterset = self.filtered()
        context.update(rows=services.vdag_rows(queryset), **self.filter_context(filterset))
        return context


class VDagDetailView(DashboardView):
    template_name = "dashboard/vdag_detail.html"
    section = "vdags"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(
            services.vdag_detail(
                self.kwargs["vdag_uri"],
                block_url=lambda block_id: reverse("dashboard:block", args=[block_id]),
            )
        )
        context["title"] = f"vDAG {context['vdag'].pk}"
        return context


class TaskListView(FilteredListView):
    template_name = "dashboard/task_list.html"
    section = "tasks"
    title = "Tasks"
    filterset_class = TaskFilterSet

    def base_queryset(self) -> QuerySet:
        return services.visible_tasks(self.request.user)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        queryset, filterset = self.filtered()
        context.update(services.task_page(queryset), **self.filter_context(filterset))
        return context


class DashboardLoginView(auth_views.LoginView):
    """The admin's login page, for every active user.

    The admin's own form admits staff only; the dashboard is for every user of the network,
    so it shows the same page with Django's plain authentication form. A staff session is
    shared with the admin either way."""

    template_name = "admin/login.html"
    authentication_form = AuthenticationForm
    redirect_authenticated_user = True
    next_page = reverse_lazy("dashboard:overview")

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(admin.site.each_context(self.request))
        context.update(
            title="Log in", subtitle="Network dashboard", app_path=self.request.get_full_path()
        )
        return context


class DashboardLogoutView(auth_views.LogoutView):
    next_page = LOGIN_URL
