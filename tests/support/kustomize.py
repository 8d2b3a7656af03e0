"""Renders PAO's kustomizations without kubectl, supporting exactly what deploy/k8s uses.

Fields: `resources` (files and kustomization folders), `namespace`, `labels` (metadata labels
only, `includeSelectors: false`), `images` (newName, newTag, digest) and `patches` (strategic
merge or JSON 6902, from a file or inline, with or without a `target` of kind and name). Any
other field is refused, so a kustomization that grows a feature gets a renderer that grows with
it. Where `kubectl kustomize` is available the tests compare both renderings.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

Document = dict[str, Any]

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
#: Kinds that live outside namespaces (only those the manifests could hold).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
#: Strategic-merge keys of the pod-spec lists; any other list is replaced whole.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}
#: Kinds whose patches merge strategically; others (custom resources) get a JSON merge patch.
BUILTIN_KINDS = {
    "ConfigMap",
    "Deployment",
    "HorizontalPodAutoscaler",
    "Job",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "Secret",
    "Service",
    "ServiceAccount",
}


class KustomizeError(ValueError):
    """A kustomization this renderer does not support, or a patch that matches nothing."""


def render(folder: Path) -> list[Document]:
    """The documents `kubectl kustomize folder` prints (in the order they were read)."""
    path = folder / "kustomization.yaml"
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{path}: unsupported fields {sorted(unknown)}")
    documents: list[Document] = []
    for entry in spec.get("resources", []):
        where = (folder / entry).resolve()
        if where.is_dir():
            documents.extend(render(where))
        else:
            documents.extend(d for d in yaml.safe_load_all(where.read_text()) if d)
    for patch in spec.get("patches", []):
        _apply_patch(folder, patch, documents)
    if "namespace" in spec:
        for document in documents:
            if document["kind"] not in CLUSTER_SCOPED:
                document["metadata"]["namespace"] = spec["namespace"]
    for label in spec.get("labels", []):
        if label.get("includeSelectors") or label.get("includeTemplates"):
            raise KustomizeError(f"{path}: only metadata labels are supported")
        for document in documents:
            document["metadata"].setdefault("labels", {}).update(label["pairs"])
    for image in spec.get("images", []):
        for document in documents:
            _set_image(document, image)
    return documents


def _apply_patch(folder: Path, patch: Document, documents: list[Document]) -> None:
    text = (folder / patch["path"]).read_text() if "path" in patch else patch["patch"]
    parsed = list(yaml.safe_load_all(text))
    target = patch.get("target")
    if len(parsed) == 1 and isinstance(parsed[0], list):
        if target is None:
            raise KustomizeError("a JSON 6902 patch needs a target")
        operations = jsonpatch.JsonPatch(parsed[0])
        matched = _matching(documents, target)
        for index in matched:
            documents[index] = operations.apply(documents[index])
        return
    for body in (p for p in parsed if p):
        selector = target or {"kind": body["kind"], "name": body["metadata"]["name"]}
        for index in _matching(documents, selector):
            document = documents[index]
            keep = document["metadata"]["name"]
            strategic = document["kind"] in BUILTIN_KINDS
            documents[index] = _merge(document, body, strategic=strategic)
            documents[index]["metadata"]["name"] = keep


def _matching(documents: list[Document], target: Document) -> list[int]:
    unknown = set(target) - {"kind", "name"}
    if unknown:
        raise KustomizeError(f"unsupported target fields {sorted(unknown)}")
    found = [
        i
        for i, d in enumerate(documents)
        if all(re.fullmatch(target[k], _field(d, k)) for k in ("kind", "name") if k in target)
    ]
    if not found:
        raise KustomizeError(f"no resource matches the patch target {target}")
    return found


def _field(document: Document, key: str) -> str:
    return str(document["kind"] if key == "kind" else document["metadata"]["name"])


def _merge(base: Any, patch: Any, *, strategic: bool, key: str | None = None) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            elif name in merged:
                merged[name] = _merge(merged[name], value, strategic=strategic, key=name)
            else:
                merged[name] = copy.deepcopy(value)
        return merged
    if strategic and isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        by = MERGE_KEYS[key]
        merged_list = copy.deepcopy(base)
        for item in patch:
            same = next(
                (i for i, old in enumerate(merged_list) if old.get(by) == item.get(by)), None
            )
            if same is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[same] = _merge(merged_list[same], item, strategic=True)
        return merged_list
    return copy.deepcopy(patch)


def _set_image(document: Document, image: Document) -> None:
    for container in _containers(document):
        name, tag = _split_image(container["image"])
        if name != image["name"]:
            continue
        new_name = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{new_name}@{image['digest']}"
        else:
            new_tag = image.get("newTag", tag)
            container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def _containers(document: Document) -> list[Document]:
    pod = document.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _split_image(image: str) -> tuple[str, str | None]:
    if "@" in image:
        return image.split("@", 1)[0], None
    name, _, tag = image.rpartition(":")
    if name and "/" not in tag:
        return name, tag
    return image, None
