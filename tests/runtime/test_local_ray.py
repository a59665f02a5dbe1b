"""A local Ray tells the job's workers its own address, so that Ray's lookups inside them (Ray Train's
PlacementGroupCleaner asks the State API for "auto") find it even where other local Rays run on the machine."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.integration


def test_a_local_rays_workers_are_told_its_own_address(ray_session) -> None:  # type: ignore[no-untyped-def]
    """The workers carry this Ray's GCS address, "auto" resolves to it there, and the driver's environment is left
    as it was."""
    ray = ray_session
    from ray._private.services import canonicalize_bootstrap_address_or_die

    @ray.remote(num_cpus=0)
    def resolved() -> tuple[str | None, str]:
        import os

        from ray._private.services import canonicalize_bootstrap_address_or_die

        return os.environ.get("RAY_ADDRESS"), canonicalize_bootstrap_address_or_die(None)

    told, found = ray.get(resolved.remote())
    assert told is not None and told.endswith(":" + ray.get_runtime_context().gcs_address.rpartition(":")[2])
    assert found == canonicalize_bootstrap_address_or_die(ray.get_runtime_context().gcs_address)
    assert "RAY_GCS_SERVER_PORT" not in os.environ
