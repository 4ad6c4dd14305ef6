"""Render a kustomization offline: the subset of `kubectl kustomize` that deploy/k8s uses.

No kustomize or kubectl installs from the registries this project can reach (Debian's kubernetes-client
is 1.20, with a kustomize too old for `labels` and `patches`), so the tests render with this instead.
Supported: `resources` (files and directories), `namespace`, `labels` (pairs, includeSelectors: false),
`images` (newName/newTag/digest) and `patches` with a `path` to a strategic-merge patch. Anything else
is refused with an error rather than silently ignored, so the rendering cannot drift from kustomize's.
tests/test_k8s.py compares this renderer with `kubectl kustomize` wherever kubectl exists.

    python -m tests.kustomize deploy/k8s/overlays/gpu > rendered.yaml
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
# Strategic-merge keys of the lists a patch may touch (from the Kubernetes API's patchMergeKey tags);
# any other list is replaced whole, as kustomize does for lists without a merge key.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass"}


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not implement, or is malformed."""


def render(directory: Path) -> list[Obj]:
    """The objects `kubectl kustomize directory` would print (in resource order, not kustomize's)."""
    kustomization = _load_kustomization(directory)
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        target = directory / entry
        objects.extend(render(target) if target.is_dir() else _load_objects(target))
    for patch in kustomization.get("patches", []):
        _apply_patch(objects, directory, patch)
    for image in kustomization.get("images", []):
        _set_image(objects, image)
    for label_set in kustomization.get("labels", []):
        _add_labels(objects, label_set)
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def _load_kustomization(directory: Path) -> Obj:
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    data = yaml.safe_load(path.read_text()) or {}
    unsupported = set(data) - SUPPORTED
    if unsupported:
        raise KustomizeError(f"{path}: unsupported fields {sorted(unsupported)}")
    return dict(data)


def _load_objects(path: Path) -> list[Obj]:
    objects = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for obj in objects:
        if not isinstance(obj, dict) or not {"apiVersion", "kind", "metadata"} <= set(obj):
            raise KustomizeError(f"{path}: not a Kubernetes object (apiVersion, kind, metadata)")
    return objects


def _apply_patch(objects: list[Obj], directory: Path, patch: Obj) -> None:
    if set(patch) != {"path"}:
        raise KustomizeError(f"patch {patch}: only `path` to a strategic-merge patch is supported")
    (body,) = _load_objects(directory / patch["path"])
    key = (body["apiVersion"], body["kind"], body["metadata"]["name"])
    matches = [obj for obj in objects if (obj["apiVersion"], obj["kind"], obj["metadata"]["name"]) == key]
    if len(matches) != 1:
        raise KustomizeError(f"patch {patch['path']}: {len(matches)} objects match {key}")
    merged = strategic_merge(matches[0], body)
    matches[0].clear()
    matches[0].update(merged)


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """Merge `patch` into `base` the way a strategic-merge patch does for the keys in MERGE_KEYS."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(str(k).startswith("$") for k in patch):
            raise KustomizeError(f"patch directives ({list(patch)}) are not supported")
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value, key) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        merge_key = MERGE_KEYS[field]
        merged_list, added = copy.deepcopy(base), []
        for item in patch:
            index = next((i for i, old in enumerate(base) if old.get(merge_key) == item.get(merge_key)), None)
            if index is None:
                added.append(copy.deepcopy(item))
            else:
                merged_list[index] = strategic_merge(base[index], item, field)
        return added + merged_list  # kustomize puts items new to the list first
    return copy.deepcopy(patch)


def _pod_containers(obj: Obj) -> list[Obj]:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("containers", []), *pod.get("initContainers", [])]


def _split_image(reference: str) -> tuple[str, str]:
    """("registry:5000/repo", ":tag" or "@sha256:..." or "") for an image reference."""
    if "@" in reference:
        name, digest = reference.split("@", 1)
        return name, "@" + digest
    colon = reference.rfind(":")
    return (reference[:colon], reference[colon:]) if colon > reference.rfind("/") else (reference, "")


def _set_image(objects: list[Obj], image: Obj) -> None:
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise KustomizeError(f"image {image}: unsupported fields {sorted(unknown)}")
    for obj in objects:
        for container in _pod_containers(obj):
            name, suffix = _split_image(container["image"])
            if name != image["name"]:
                continue
            if "digest" in image:
                suffix = "@" + image["digest"]
            elif "newTag" in image:
                suffix = ":" + str(image["newTag"])
            container["image"] = image.get("newName", name) + suffix


def _add_labels(objects: list[Obj], label_set: Obj) -> None:
    if label_set.get("includeSelectors") or label_set.get("includeTemplates") or set(label_set) - {
            "pairs", "includeSelectors", "includeTemplates"}:
        raise KustomizeError(f"labels {label_set}: only pairs on metadata.labels are supported")
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(label_set["pairs"])


def to_yaml(objects: list[Obj]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=True, default_flow_style=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, help="a directory with a kustomization.yaml")
    print(to_yaml(render(parser.parse_args().directory)), end="")


if __name__ == "__main__":
    main()
