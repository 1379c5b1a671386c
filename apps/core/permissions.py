"""Permissions: reads are open to authenticated or anonymous users as each view decides;
writes need an authenticated user; owned objects are changed only by their owner or staff."""

from rest_framework import permissions


class IsAuthenticatedForWrites(permissions.BasePermission):
    """Safe methods for everyone, unsafe ones for authenticated users only."""

    def has_permission(self, request, view) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        return bool(request.user and request.user.is_authenticated)


class IsOwnerOrStaffForWrites(IsAuthenticatedForWrites):
    """An object is changed only by its owner or by staff; ownerless (system) objects,
    such as seeded built-ins, only by staff."""

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        user = request.user
        if user.is_staff:
            return True
        owner_id = getattr(obj, "owner_id", None)
        return owner_id is not None and owner_id == user.pk
