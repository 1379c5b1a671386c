"""Admin pages of the allocator: reservations per instance and per GPU."""

from __future__ import annotations

from django.contrib import admin, messages

from apps.allocator import services
from apps.allocator.models import Allocation, GPUAllocation


class GPUAllocationInline(admin.TabularInline):
    model = GPUAllocation
    extra = 0
    can_delete = False
    readonly_fields = ("gpu", "instance_id", "exclusive", "memory_mb")

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Allocation)
class AllocationAdmin(admin.ModelAdmin):
    list_display = (
        "instance_id",
        "block_id",
        "cluster",
        "node",
        "gpu_list",
        "vcpus",
        "memory_mb",
        "shared_gpus",
        "created_at",
    )
    list_filter = ("shared_gpus", "cluster")
    search_fields = ("instance_id", "block_id", "node__id")
    inlines = [GPUAllocationInline]
    actions = ["release_selected"]
    readonly_fields = tuple(f.name for f in Allocation._meta.fields)

    @admin.display(description="GPUs")
    def gpu_list(self, obj: Allocation) -> str:
        return ", ".join(str(g.gpu.index) for g in obj.gpu_allocations.select_related("gpu"))

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Release the selected reservations")
    def release_selected(self, request, queryset):
        released = sum(1 for a in queryset if services.release(a.instance_id) >= 0)
        self.message_user(request, f"{released} reservation(s) released", messages.SUCCESS)


@admin.register(GPUAllocation)
class GPUAllocationAdmin(admin.ModelAdmin):
    list_display = ("gpu", "instance_id", "exclusive", "memory_mb")
    list_filter = ("exclusive",)
    search_fields = ("instance_id", "gpu__node__id")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
