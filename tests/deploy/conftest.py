"""Fixtures of the deployment tests; the helpers live in deploylib.py (imported by the tests)."""

from __future__ import annotations

import pytest

from tests.deploy import deploylib
from tests.deploy.deploylib import CrdSchema, Manifest


@pytest.fixture(scope="session")
def manifests() -> list[Manifest]:
    return deploylib.load_manifests()


@pytest.fixture(scope="session")
def crd_schemas() -> dict[tuple[str, str], CrdSchema]:
    return deploylib.load_crd_schemas()


@pytest.fixture(scope="session")
def stack() -> dict:
    return deploylib.load_stack()


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> dict[str, list[Manifest]]:
    """`kubectl kustomize` output of k8s/ and k8s/community-edition/ (secrets from the .example files)."""
    tree = deploylib.prepared_k8s_tree(tmp_path_factory.mktemp("kustomize"))
    return {
        "k8s": deploylib.parse_documents(deploylib.kustomize_build(tree), tree),
        "k8s/community-edition": deploylib.parse_documents(deploylib.kustomize_build(tree / "community-edition"), tree),
    }
