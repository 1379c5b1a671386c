#!/usr/bin/env bash
# Build the AIOS container images with whichever OCI builder works here.
#
#   deploy/images/build.sh [IMAGE...]   build (default: control-plane runtime node-metrics)
#   deploy/images/build.sh check        say which builder would be used and whether the base
#                                       image is available; build nothing
#   deploy/images/build.sh pin          print the digest of the base image tag (after a pull)
#   deploy/images/build.sh --dry-run [IMAGE...]   print the build commands, run none
#
# IMAGE: control-plane | runtime | node-metrics | example-echo (a component built FROM runtime)
#
# Environment:
#   AIOS_OCI_BUILDER          docker | podman | buildah (default: the first that works, in
#                             that order; docker only counts with a reachable daemon)
#   AIOS_IMAGE_REGISTRY       prefix of the image names, e.g. registry.example.com/aios
#   AIOS_IMAGE_TAG            tag (default: the project version from pyproject.toml)
#   AIOS_PYTHON_BASE          base image reference; default from base-images.env (tag@digest)
#   AIOS_ALLOW_UNPINNED_BASE  1: build even though base-images.env has no digest yet
#   AIOS_BUILD_ARGS           extra flags for the builder (e.g. "--ulimit nofile=4096:4096")
#   AIOS_BUILD_TIMEOUT        seconds one image build may take (default 1800)
#
# Exit codes: 0 ok, 2 usage, 3 no working builder, 4 base image unavailable or not pinned,
# other: the builder's own failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ALL_IMAGES=(control-plane runtime node-metrics)

die() {
    local code="$1"
    shift
    echo "build.sh: $*" >&2
    exit "$code"
}

# shellcheck source=/dev/null
source "$HERE/base-images.env"

project_version() {
    sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n 1
}

TAG="${AIOS_IMAGE_TAG:-$(project_version)}"
TAG="${TAG:-dev}"
PREFIX="${AIOS_IMAGE_REGISTRY:+${AIOS_IMAGE_REGISTRY%/}/}"

base_reference() {
    if [[ -n "${AIOS_PYTHON_BASE:-}" ]]; then
        echo "$AIOS_PYTHON_BASE"
    elif [[ -n "${PYTHON_BASE_DIGEST:-}" ]]; then
        echo "${PYTHON_BASE_IMAGE}@${PYTHON_BASE_DIGEST}"
    else
        echo "$PYTHON_BASE_IMAGE"
    fi
}

builder_works() {
    case "$1" in
    docker) command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1 ;;
    podman) command -v podman >/dev/null && timeout 20 podman info >/dev/null 2>&1 ;;
    buildah) command -v buildah >/dev/null && timeout 20 buildah version >/dev/null 2>&1 ;;
    *) return 1 ;;
    esac
}

detect_builder() {
    if [[ -n "${AIOS_OCI_BUILDER:-}" ]]; then
        builder_works "$AIOS_OCI_BUILDER" ||
            die 3 "AIOS_OCI_BUILDER=$AIOS_OCI_BUILDER does not work here (not installed, or no daemon)"
        echo "$AIOS_OCI_BUILDER"
        return
    fi
    local candidate
    for candidate in docker podman buildah; do
        if builder_works "$candidate"; then
            echo "$candidate"
            return
        fi
    done
    local seen=""
    command -v docker >/dev/null && seen+=" docker (client only: no daemon answers)"
    command -v podman >/dev/null && seen+=" podman (installed but 'podman info' fails)"
    command -v buildah >/dev/null && seen+=" buildah (installed but 'buildah version' fails)"
    die 3 "no working OCI builder: need docker with a running daemon, podman or buildah.${seen:+ Found:$seen}"
}

# The image is present locally, or can be pulled within a minute.
base_available() {
    local builder="$1" ref="$2"
    case "$builder" in
    docker) docker image inspect "$ref" >/dev/null 2>&1 || timeout 60 docker pull -q "$ref" >/dev/null 2>&1 ;;
    podman) podman image exists "$ref" 2>/dev/null || timeout 60 podman pull -q "$ref" >/dev/null 2>&1 ;;
    buildah) buildah inspect --type image "$ref" >/dev/null 2>&1 || timeout 60 buildah pull -q "$ref" >/dev/null 2>&1 ;;
    esac
}

require_pinned_base() {
    if [[ -z "${AIOS_PYTHON_BASE:-}" && -z "${PYTHON_BASE_DIGEST:-}" ]]; then
        if [[ "${AIOS_ALLOW_UNPINNED_BASE:-0}" == "1" ]]; then
            echo "build.sh: warning: building FROM $PYTHON_BASE_IMAGE without a digest (AIOS_ALLOW_UNPINNED_BASE=1)" >&2
        else
            die 4 "base-images.env has no PYTHON_BASE_DIGEST: pin the base image first ('build.sh pin' prints it), or set AIOS_ALLOW_UNPINNED_BASE=1"
        fi
    fi
}

containerfile_of() {
    case "$1" in
    control-plane | runtime | node-metrics) echo "$HERE/Containerfile.$1" ;;
    example-echo) echo "$HERE/examples/component.Containerfile" ;;
    *) die 2 "unknown image '$1' (control-plane, runtime, node-metrics, example-echo)" ;;
    esac
}

name_of() {
    case "$1" in
    example-echo) echo "${PREFIX}aios/echo:1.0.0" ;;
    *) echo "${PREFIX}aios-$1:${TAG}" ;;
    esac
}

# A minimal build context: the tracked and not-ignored files of the paths the images copy.
# Nothing else of the working tree (virtualenvs, data dirs, generated secrets) can leak in.
stage_context() {
    local ctx="$1"
    local paths=(manage.py requirements.txt pyproject.toml aios_site apps block_sdk aios_instance
        templates static examples deploy/images)
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard -- "${paths[@]}" |
            while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
            tar --null -cf - -T -) | tar -xf - -C "$ctx"
    else
        (cd "$ROOT" && tar -cf - --exclude=__pycache__ --exclude='*.pyc' "${paths[@]}") | tar -xf - -C "$ctx"
    fi
    cp "$HERE/.dockerignore" "$ctx/.dockerignore"
}

build_command() {
    local builder="$1" image="$2" ctx="$3" base="$4"
    local file
    file="$(containerfile_of "$image")"
    local rel="${file#"$ROOT"/}"
    local revision
    revision="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    local cmd=()
    case "$builder" in
    docker) cmd=(docker build) ;;
    # OCI format has no HEALTHCHECK: keep the docker format so the health check survives.
    podman) cmd=(podman build --format docker) ;;
    buildah) cmd=(buildah build --format docker) ;;
    esac
    cmd+=(-f "$ctx/$rel" -t "$(name_of "$image")"
        --build-arg "PYTHON_BASE=$base" --build-arg "VERSION=$TAG" --build-arg "REVISION=$revision")
    if [[ "$image" == example-echo ]]; then
        cmd+=(--build-arg "AIOS_RUNTIME=$(name_of runtime)")
    fi
    # shellcheck disable=SC2206  # AIOS_BUILD_ARGS is a list of flags, split on spaces
    cmd+=(${AIOS_BUILD_ARGS:-} "$ctx")
    printf '%q ' "${cmd[@]}"
    echo
}

main() {
    local mode=build
    local images=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
        check | --check) mode=check ;;
        pin | --pin) mode=pin ;;
        --dry-run | -n) mode=dry-run ;;
        -h | --help)
            sed -n '2,26s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
            return 0
            ;;
        -*) die 2 "unknown option $1" ;;
        *) images+=("$1") ;;
        esac
        shift
    done
    [[ ${#images[@]} -gt 0 ]] || images=("${ALL_IMAGES[@]}")
    local image
    for image in "${images[@]}"; do containerfile_of "$image" >/dev/null; done

    local base
    base="$(base_reference)"
    if [[ "$mode" == dry-run ]]; then
        local builder="${AIOS_OCI_BUILDER:-docker}"
        for image in "${images[@]}"; do build_command "$builder" "$image" CONTEXT "$base"; done
        return 0
    fi

    if [[ "$mode" == build ]]; then
        require_pinned_base
    fi
    local builder
    builder="$(detect_builder)" || exit $?
    case "$mode" in
    check)
        echo "builder: $builder"
        echo "base image: $base"
        base_available "$builder" "$base" ||
            die 4 "base image $base is not available: not present locally and it cannot be pulled (no registry access?)"
        echo "base image available"
        return 0
        ;;
    pin)
        base_available "$builder" "$PYTHON_BASE_IMAGE" || die 4 "cannot pull $PYTHON_BASE_IMAGE"
        case "$builder" in
        docker) docker image inspect --format '{{index .RepoDigests 0}}' "$PYTHON_BASE_IMAGE" | sed 's/.*@//' ;;
        podman) podman image inspect --format '{{.Digest}}' "$PYTHON_BASE_IMAGE" ;;
        buildah) buildah inspect --type image --format '{{.FromImageDigest}}' "$PYTHON_BASE_IMAGE" ;;
        esac
        return 0
        ;;
    esac

    base_available "$builder" "$base" ||
        die 4 "base image $base is not available: not present locally and it cannot be pulled (no registry access?). Pull it where a registry is reachable, or set AIOS_PYTHON_BASE to a local image."
    local ctx
    ctx="$(mktemp -d "${TMPDIR:-/tmp}/aios-build-context.XXXXXX")"
    trap 'rm -rf "$ctx"' EXIT
    stage_context "$ctx"
    for image in "${images[@]}"; do
        echo "build.sh: building $(name_of "$image") with $builder" >&2
        local line
        line="$(build_command "$builder" "$image" "$ctx" "$base")"
        eval "timeout ${AIOS_BUILD_TIMEOUT:-1800} $line"
    done
}

main "$@"
