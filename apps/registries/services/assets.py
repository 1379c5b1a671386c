"""The built-in asset store (Django's default storage: filesystem, or S3-compatible when
configured) and registration of external assets by URL.

Uploaded files are content addressed: stored once under ``assets/<sha[:2]>/<sha256>``
however many assets point at them, and removed when the last one goes.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import uuid
from typing import IO, Any
from urllib.parse import quote

from django.conf import settings
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db.models import QuerySet

from apps.core.errors import ApiError, Conflict, NotFound
from apps.registries.choices import AssetSource
from apps.registries.models import Asset, AssetRegistry
from apps.registries.services.common import (
    create_unique,
    field_error,
    lookup_value,
    normalize_tags,
    versioned_uri,
)

log = logging.getLogger("aios.registries")

CHUNK = 1024 * 1024
DEFAULT_MAX_UPLOAD = 512 * 1024 * 1024


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


def max_upload_bytes() -> int:
    """Upload limit: the ``AIOS_ASSET_MAX_UPLOAD_BYTES`` setting or environment variable."""
    configured = getattr(settings, "AIOS_ASSET_MAX_UPLOAD_BYTES", None)
    if configured is None:
        configured = os.environ.get("AIOS_ASSET_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD)
    return int(configured)


def check_declared_size(content_length: Any) -> None:
    """Refuse an upload early from its Content-Length, before reading the body."""
    try:
        declared = int(content_length or 0)
    except (TypeError, ValueError):
        return
    limit = max_upload_bytes()
    # Multipart framing adds a little; allow a small margin over the file limit.
    if declared > limit + 64 * 1024:
        raise PayloadTooLarge(
            f"the upload is {declared} bytes; the limit is {limit} bytes",
            details=[{"limit_bytes": limit, "size_bytes": declared}],
        )


def download_path(asset: Asset) -> str:
    return f"/api/v1/assets/{quote(asset.asset_uri, safe=':@-._~')}/download/"


def public_url(asset: Asset) -> str:
    if asset.source == AssetSource.EXTERNAL:
        return asset.external_url
    return f"{settings.AIOS_PUBLIC_URL.rstrip('/')}{download_path(asset)}"


def _hash_and_measure(stream: IO[bytes], limit: int) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the file is larger than the limit of {limit} bytes",
                details=[{"limit_bytes": limit}],
            )
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest(), size


def _assets_db(asset_registry_id: Any) -> AssetRegistry | None:
    if asset_registry_id in (None, ""):
        return None
    registry = None
    if _is_uuid(asset_registry_id):
        registry = AssetRegistry.objects.filter(pk=str(asset_registry_id)).first()
    if registry is None:
        raise field_error("assets_db_id", f"asset registry {asset_registry_id!r} not found")
    return registry


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def store_asset(
    upload: File,
    *,
    name: str,
    version: str,
    tag: str,
    metadata: dict | None = None,
    tags: Any = None,
    owner=None,
) -> Asset:
    """Store an uploaded file in the built-in store and record it (201 at the API)."""
    uri = versioned_uri(
        name, version, tag, fields=("asset_name", "asset_version.version", "asset_version.tag")
    )
    if Asset.objects.filter(asset_uri=uri).exists():  # before hashing a large file for nothing
        raise Conflict(f"asset {uri!r} already exists", details=[{"uri": uri}])
    sha256, size = _hash_and_measure(upload, max_upload_bytes())
    storage_name = f"assets/{sha256[:2]}/{sha256}"
    if not default_storage.exists(storage_name):
        storage_name = default_storage.save(storage_name, upload)
    filename = os.path.basename(getattr(upload, "name", "") or "").replace("\x00", "")[:255]
    content_type = (
        (getattr(upload, "content_type", None) or "").replace("\x00", "")
        or mimetypes.guess_type(filename)[0]
        or "application/octet-stream"
    )
    asset = create_unique(
        "asset",
        uri,
        lambda: Asset.objects.filter(asset_uri=uri).exists(),
        lambda: Asset.objects.create(
            asset_uri=uri,
            name=name,
            version=version,
            tag=tag,
            source=AssetSource.UPLOADED,
            metadata=metadata or {},
            tags=normalize_tags(tags, "asset_tags"),
            storage_name=storage_name,
            sha256=sha256,
            size=size,
            content_type=content_type[:200],
            filename=filename,
            owner=owner if owner is not None and owner.is_authenticated else None,
        ),
    )
    log.info("event=asset_stored uri=%s sha256=%s size=%s", uri, sha256, size)
    return asset


def register_external_asset(
    *,
    name: str,
    version: str,
    tag: str,
    url: str,
    metadata: dict | None = None,
    tags: Any = None,
    assets_db_id: Any = None,
    sha256: str = "",
    size: int | None = None,
    content_type: str = "",
    owner=None,
) -> Asset:
    """Record an asset that lives at a public URL (nothing is downloaded)."""
    uri = versioned_uri(
        name, version, tag, fields=("asset_name", "asset_version.version", "asset_version.tag")
    )
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://", "s3://")):
        raise field_error("asset_public_url", "expected an http(s) or s3 URL")
    registry = _assets_db(assets_db_id)
    asset = create_unique(
        "asset",
        uri,
        lambda: Asset.objects.filter(asset_uri=uri).exists(),
        lambda: Asset.objects.create(
            asset_uri=uri,
            name=name,
            version=version,
            tag=tag,
            source=AssetSource.EXTERNAL,
            external_url=url,
            assets_db=registry,
            metadata=metadata or {},
            tags=normalize_tags(tags, "asset_tags"),
            sha256=sha256 or "",
            size=size,
            content_type=content_type or "",
            owner=owner if owner is not None and owner.is_authenticated else None,
        ),
    )
    log.info("event=asset_registered uri=%s url=%s", uri, url)
    return asset


def get_asset(uri: str) -> Asset:
    asset = Asset.objects.filter(asset_uri=uri).first() if lookup_value(uri) else None
    if asset is None:
        raise NotFound(f"asset {uri!r} not found", details=[{"asset_uri": uri}])
    return asset


def versions_of(name: str) -> QuerySet[Asset]:
    return Asset.objects.filter(name=name).order_by("-created_at")


def open_asset(asset: Asset) -> IO[bytes]:
    """The stored file, for streaming; external assets have no local file."""
    if asset.source != AssetSource.UPLOADED or not asset.storage_name:
        raise NotFound(f"asset {asset.asset_uri!r} has no file in the built-in store")
    try:
        return default_storage.open(asset.storage_name, "rb")
    except FileNotFoundError:
        log.error("event=asset_file_missing uri=%s name=%s", asset.asset_uri, asset.storage_name)
        raise NotFound(f"the file of asset {asset.asset_uri!r} is missing from storage") from None


def delete_asset(asset: Asset) -> None:
    """Delete the record; the stored file goes with the last asset that uses it."""
    storage_name = asset.storage_name
    uri = asset.asset_uri
    asset.delete()
    if storage_name and not Asset.objects.filter(storage_name=storage_name).exists():
        default_storage.delete(storage_name)
    log.info("event=asset_deleted uri=%s", uri)


def update_asset(asset: Asset, *, metadata: Any = None, tags: Any = None) -> Asset:
    """Only descriptive fields change; the content of a version is immutable."""
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise field_error("asset_metadata", "expected an object")
        asset.metadata = metadata
    if tags is not None:
        asset.tags = normalize_tags(tags, "asset_tags")
    asset.save()
    return asset
