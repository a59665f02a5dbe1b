"""Every control law against ViSP 3.5's own outputs (tests/fixtures/visp_cases.json) to 1e-8."""

from __future__ import annotations

import numpy as np
import pytest

from policy.control import (
    exp_se3,
    hybrid,
    ibvs,
    interaction_matrix_point,
    malis_25d,
    pbvs,
    theta_u,
)

pytestmark = pytest.mark.unit

TOL = 1e-8
N_CASES = 25


def _pose(case: dict) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = case["cdMc_R"]
    T[:3, 3] = case["cdMc_t"]
    return T


def _ours(kind: str, c: dict) -> np.ndarray:
    T, lam, P, Pd = _pose(c), c["lam"], np.array(c["pts"]), np.array(c["pts_d"])
    if kind == "PBVS":
        return pbvs(T, lam)
    if kind.startswith("IBVS_"):
        return ibvs(P, Pd, lam, mode=kind.removeprefix("IBVS_").lower())
    if kind == "HYBRID":
        return hybrid(T, P[0, :2], P[0, 2], Pd[0, :2], lam)
    if kind == "MALIS":
        return malis_25d(T, P[0], Pd[0, 2], Pd[0, :2], lam)
    if kind == "THETAU":
        return theta_u(T[:3, :3])
    if kind == "EXPMAP":
        E = exp_se3(c["expmap_in"]["v"], c["expmap_in"]["dt"])
        return np.concatenate([E[:3, :3].ravel(), E[:3, 3]])
    raise AssertionError(kind)


def _visp(kind: str, c: dict) -> np.ndarray:
    ref = c["visp"][kind]
    if kind == "THETAU":
        return np.asarray(ref)
    if kind == "EXPMAP":
        return np.concatenate([np.ravel(ref["R"]), ref["t"]])
    return np.asarray(ref["v"])


def test_reference_file_has_every_case(visp_cases: list[dict]) -> None:
    assert len(visp_cases) == N_CASES
    kinds = {"PBVS", "IBVS_CURRENT", "IBVS_DESIRED", "IBVS_MEAN", "HYBRID", "MALIS", "THETAU", "EXPMAP"}
    assert all(kinds <= set(c["visp"]) for c in visp_cases)


@pytest.mark.parametrize(
    "kind", ["PBVS", "IBVS_CURRENT", "IBVS_DESIRED", "IBVS_MEAN", "HYBRID", "MALIS", "THETAU", "EXPMAP"]
)
@pytest.mark.parametrize("i", range(N_CASES))
def test_matches_visp(visp_cases: list[dict], kind: str, i: int) -> None:
    c = visp_cases[i]
    np.testing.assert_allclose(_ours(kind, c), _visp(kind, c), rtol=0, atol=TOL)


@pytest.mark.parametrize("i", range(N_CASES))
def test_point_interaction_matrix_matches_visp_rows(visp_cases: list[dict], i: int) -> None:
    c = visp_cases[i]
    L = np.concatenate([interaction_matrix_point(*p) for p in c["pts"]])
    np.testing.assert_allclose(L, c["visp"]["IBVS_CURRENT"]["L"], rtol=0, atol=TOL)
    Ld = np.concatenate([interaction_matrix_point(*p) for p in c["pts_d"]])
    np.testing.assert_allclose(Ld, c["visp"]["IBVS_DESIRED"]["L"], rtol=0, atol=TOL)


@pytest.mark.parametrize("i", range(N_CASES))
def test_hybrid_error_vector_matches_visp(visp_cases: list[dict], i: int) -> None:
    # ViSP's e = [t; xg - xg*; tu_z] confirms which quantities the law is built from.
    c = visp_cases[i]
    P, Pd = np.array(c["pts"]), np.array(c["pts_d"])
    e = np.concatenate([c["cdMc_t"], P[0, :2] - Pd[0, :2], [theta_u(np.array(c["cdMc_R"]))[2]]])
    np.testing.assert_allclose(e, c["visp"]["HYBRID"]["e"], rtol=0, atol=TOL)
