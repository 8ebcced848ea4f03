"""The Kubernetes manifests (deploy/k8s) agree with the code they deploy.

``make deploy-check`` validates the rendered objects against Kubernetes' schemas; these
tests check what no schema knows: that each pod loads the settings it is given (the
mounted vigil.toml, its environment, its flags) through Vigil's own loaders, that the
probes and scrape targets are where those settings serve them, and that the three stages
are wired to each other (run → observations → patterns → pattern topic → incidents →
alerts, and the pattern topic back to run's learning guard).
Rendering needs ``kubectl`` (its built-in kustomize).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.feedback import decode_pattern_alert
from stream.incidents_stage import ENV_PREFIX as INCIDENTS_PREFIX
from stream.incidents_stage import IncidentStageSettings, load_incident_settings
from stream.patterns_stage import ENV_PREFIX as PATTERNS_PREFIX
from stream.patterns_stage import PatternStageSettings, load_stage_settings, watermark_record
from stream.service import SHUTDOWN_EXIT_GRACE_S
from stream.settings import ENV_PREFIX, ServiceSettings, load_settings

yaml = pytest.importorskip("yaml", reason="PyYAML comes with kubernetes-validate ('.[dev]')")

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not installed: it renders deploy/k8s (kubectl kustomize)"
)

Obj = dict[str, Any]
StageSettings = ServiceSettings | PatternStageSettings | IncidentStageSettings

# The environment prefix each StatefulSet's stage reads its settings from.
PREFIXES = {
    "vigil-run": ENV_PREFIX,
    "vigil-patterns": PATTERNS_PREFIX,
    "vigil-incidents": INCIDENTS_PREFIX,
}


def render(name: str) -> list[Obj]:
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / name)], capture_output=True, text=True, check=True
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=["base", "overlays/local"])
def objects(request: pytest.FixtureRequest) -> list[Obj]:
    return render(request.param)


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return render("base")


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = find(objects, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def container(sts: Obj) -> Obj:
    containers = sts["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def env_of(c: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in c.get("env", [])}


def mounted_file(objects: list[Obj], sts: Obj, path: str, tmp_path: Path) -> Path:
    """The ConfigMap file a pod sees at ``path``, written to ``tmp_path``."""
    spec = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container(sts)["volumeMounts"]:
        directory = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(directory) and "configMap" in volumes[mount["name"]]:
            config_map = one(objects, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
            key = path.removeprefix(directory)
            assert key in config_map["data"], f"{path}: no key {key!r} in the ConfigMap"
            out = tmp_path / key
            out.write_text(config_map["data"][key])
            return out
    raise AssertionError(f"{path} is not on a ConfigMap volume of {sts['metadata']['name']}")


def pod_env(c: Obj, pod_name: str) -> dict[str, str]:
    """The environment a pod of ``pod_name`` gets (optional secrets absent)."""
    env: dict[str, str] = {}
    for name, e in env_of(c).items():
        if "value" in e:
            env[name] = e["value"]
        elif e["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[name] = pod_name
    return env


def run_settings(objects: list[Obj], tmp_path: Path) -> tuple[Obj, ServiceSettings]:
    sts = one(objects, "StatefulSet", "vigil-run")
    c = container(sts)
    assert c["command"] == ["vigil"]
    assert c["args"] == ["run"], "no flags: settings come from vigil.toml and the env"
    env = pod_env(c, "vigil-run-0")
    config = mounted_file(objects, sts, env[ENV_PREFIX + "CONFIG"], tmp_path)
    return sts, load_settings({}, config_file=config, env=env)


def patterns_settings(objects: list[Obj], tmp_path: Path) -> tuple[Obj, PatternStageSettings]:
    sts = one(objects, "StatefulSet", "vigil-patterns")
    c = container(sts)
    assert c["command"] == ["vigil"]
    assert c["args"][:2] == ["patterns", "--config"]
    assert len(c["args"]) == 3, "no other flags: settings come from vigil.toml and the env"
    config = mounted_file(objects, sts, c["args"][2], tmp_path)
    env = pod_env(c, "vigil-patterns-0")
    return sts, load_stage_settings({}, config_file=config, env=env)


def incidents_settings(objects: list[Obj], tmp_path: Path) -> tuple[Obj, IncidentStageSettings]:
    sts = one(objects, "StatefulSet", "vigil-incidents")
    c = container(sts)
    assert c["command"] == ["vigil"]
    assert c["args"][:2] == ["incidents", "--config"]
    assert len(c["args"]) == 3, "no other flags: settings come from vigil.toml and the env"
    config = mounted_file(objects, sts, c["args"][2], tmp_path)
    env = pod_env(c, "vigil-incidents-0")
    return sts, load_incident_settings({}, config_file=config, env=env)


def every_stage(objects: list[Obj], tmp_path: Path) -> list[tuple[Obj, StageSettings]]:
    return [
        run_settings(objects, tmp_path),
        patterns_settings(objects, tmp_path),
        incidents_settings(objects, tmp_path),
    ]


def test_every_statefulset_is_a_known_stage(objects: list[Obj]) -> None:
    assert {sts["metadata"]["name"] for sts in find(objects, "StatefulSet")} == set(PREFIXES)


# -- settings: what each pod loads ---------------------------------------------------------


def test_every_vigil_env_var_is_a_real_setting(objects: list[Obj]) -> None:
    stages = {
        "vigil-run": (ENV_PREFIX, set(ServiceSettings.model_fields) | {"config"}),
        "vigil-patterns": (PATTERNS_PREFIX, set(PatternStageSettings.model_fields)),
        "vigil-incidents": (INCIDENTS_PREFIX, set(IncidentStageSettings.model_fields)),
    }
    for name, (prefix, fields) in stages.items():
        for var in env_of(container(one(objects, "StatefulSet", name))):
            if not var.startswith(ENV_PREFIX):
                continue
            assert var.startswith(prefix), f"{name}: {var} is not read by this stage"
            setting = var.removeprefix(prefix).lower()
            assert setting in fields, f"{name}: {var} names no setting ({setting!r})"


def test_the_pods_load_their_settings(objects: list[Obj], tmp_path: Path) -> None:
    _, run = run_settings(objects, tmp_path)
    _, patterns = patterns_settings(objects, tmp_path)
    _, incidents = incidents_settings(objects, tmp_path)
    assert run.guarantee == patterns.guarantee == incidents.guarantee == "exactly-once"
    assert run.metrics_port is not None
    assert patterns.metrics_port is not None, "vigil patterns serves no probes without it"
    assert incidents.metrics_port is not None, "vigil incidents serves no probes without it"
    ports = [run.metrics_port, patterns.metrics_port, incidents.metrics_port]
    assert len(set(ports)) == len(ports), "one port per stage, as the Services say"


def test_group_instance_id_and_transactional_id_come_from_the_pod_name(
    objects: list[Obj], tmp_path: Path
) -> None:
    for sts, settings in every_stage(objects, tmp_path):
        name = sts["metadata"]["name"]
        var = env_of(container(sts))[PREFIXES[name] + "GROUP_INSTANCE_ID"]
        assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert settings.group_instance_id == f"{name}-0"
        assert settings.transactional_id is None, "one fixed id would fence the replicas"
        assert settings.transactional_id_value.endswith(f"-{name}-0")


def test_sasl_password_comes_from_an_optional_secret(objects: list[Obj], tmp_path: Path) -> None:
    for sts, _ in every_stage(objects, tmp_path):
        prefix = PREFIXES[sts["metadata"]["name"]]
        ref = env_of(container(sts))[prefix + "SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref["optional"] is True


def test_the_stages_are_wired_to_each_other(objects: list[Obj], tmp_path: Path) -> None:
    _, run = run_settings(objects, tmp_path)
    _, patterns = patterns_settings(objects, tmp_path)
    _, incidents = incidents_settings(objects, tmp_path)
    # run → observations → patterns
    assert run.observations
    assert patterns.observations_topic == run.observations_topic
    flagged_quantile = min(run.quantile, run.suspicious_quantile or run.quantile)
    assert patterns.base_rate == pytest.approx(1 - flagged_quantile)
    # patterns → the internal pattern topic → incidents → the alerts topic
    assert patterns.pattern_topic is not None, "pattern records would go to the alerts topic"
    pattern_topic = patterns.pattern_topic_name
    assert incidents.pattern_topic == pattern_topic
    assert incidents.alerts_topic == run.alerts_topic
    assert pattern_topic not in {run.alerts_topic, run.observations_topic, run.input_topic}
    # The learning guard follows the pattern records, where they now are; it skips the
    # watermark records stage 2 writes there too.
    assert run.pattern_alerts_topic == pattern_topic
    assert decode_pattern_alert(orjson.dumps(watermark_record(0, 3, 1.0))) is None
    # One cluster, three groups, and nothing shared that each stage writes on its own.
    assert run.bootstrap == patterns.bootstrap == incidents.bootstrap
    groups = [run.group, patterns.group, incidents.group]
    assert len(set(groups)) == 3, groups
    states = [run.state_topic_name, patterns.state_topic_name, incidents.state_topic_name]
    assert len(set(states)) == 3, states
    dlqs = [run.dlq_topic, patterns.dlq_topic, incidents.dlq_topic]
    assert len(set(dlqs)) == 3, dlqs


# -- probes, ports, metrics ----------------------------------------------------------------


def container_port(c: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port in ports, f"no container port named {port!r}"
    return ports[port]  # type: ignore[no-any-return]


def test_probes_use_the_right_paths_on_the_metrics_port(objects: list[Obj], tmp_path: Path) -> None:
    paths = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for sts, settings in every_stage(objects, tmp_path):
        c = container(sts)
        for probe, path in paths.items():
            get = c[probe]["httpGet"]
            assert get["path"] == path, f"{sts['metadata']['name']} {probe}"
            assert container_port(c, get["port"]) == settings.metrics_port
        annotations = sts["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert int(annotations["prometheus.io/port"]) == settings.metrics_port


def test_startup_allows_a_restore_and_shutdown_allows_a_drain(
    objects: list[Obj], tmp_path: Path
) -> None:
    for sts, settings in every_stage(objects, tmp_path):
        c, spec = container(sts), sts["spec"]["template"]["spec"]
        startup = c["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert budget >= settings.restore_timeout_s, "startup shorter than a restore may take"
        assert spec["terminationGracePeriodSeconds"] > settings.flush_timeout_s
        if isinstance(settings, ServiceSettings):  # vigil run ends itself this long after
            exits_by = settings.shutdown_timeout_s + SHUTDOWN_EXIT_GRACE_S
            assert spec["terminationGracePeriodSeconds"] > exits_by, "killed mid-drain"


def test_services_reach_the_metrics_port(objects: list[Obj], tmp_path: Path) -> None:
    for sts, settings in every_stage(objects, tmp_path):
        name = sts["metadata"]["name"]
        labels = sts["spec"]["template"]["metadata"]["labels"]
        headless = one(objects, "Service", sts["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None"
        for service in (headless, one(objects, "Service", f"{name}-metrics")):
            assert service["spec"]["selector"].items() <= labels.items()
            (port,) = service["spec"]["ports"]
            assert container_port(container(sts), port["targetPort"]) == settings.metrics_port


# -- pods: security, disruption, scheduling ------------------------------------------------


def test_pods_are_locked_down_and_can_still_write_what_they_must(objects: list[Obj]) -> None:
    for sts in find(objects, "StatefulSet"):
        spec = sts["spec"]["template"]["spec"]
        c = container(sts)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        # Service links would put VIGIL_*_SERVICE_HOST/_PORT in the environment, which
        # `vigil patterns` rejects as unknown settings (and VIGIL_PATTERNS_METRICS_PORT
        # would be a tcp:// URL).
        assert spec["enableServiceLinks"] is False
        # numba's cache=True kernels need a writable cache dir on a read-only root.
        cache = env_of(c)["NUMBA_CACHE_DIR"]["value"]
        writable = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        assert any(
            m["name"] in writable and cache.startswith(m["mountPath"].rstrip("/") + "/")
            for m in c["volumeMounts"]
        ), f"NUMBA_CACHE_DIR {cache} is not on a writable volume"
        resources = c["resources"]
        assert resources["requests"]["memory"] == resources["limits"]["memory"]


def test_each_statefulset_has_a_pdb_of_one_and_prefers_spreading(objects: list[Obj]) -> None:
    for sts in find(objects, "StatefulSet"):
        labels = sts["spec"]["template"]["metadata"]["labels"]
        pdb = one(objects, "PodDisruptionBudget", sts["metadata"]["name"])
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
        assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
        anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()


# -- base and overlay ----------------------------------------------------------------------


def test_base_runs_three_replicas_of_the_default_image_in_no_namespace(base: list[Obj]) -> None:
    for sts in find(base, "StatefulSet"):
        # vigil-incidents: one, see test_incidents_runs_one_replica.
        expected = 1 if sts["metadata"]["name"] == "vigil-incidents" else 3
        assert sts["spec"]["replicas"] == expected
        assert container(sts)["image"] == "vigil:latest"
    assert all("namespace" not in o["metadata"] for o in base)
    assert not find(base, "Namespace")


def test_incidents_runs_one_replica(objects: list[Obj]) -> None:
    # The pattern topic has one partition, so the group has one active member; a second
    # replica would never be ready (no partition) and stall every rolling update.
    assert one(objects, "StatefulSet", "vigil-incidents")["spec"]["replicas"] == 1


def test_local_overlay_runs_one_small_replica_each(tmp_path: Path) -> None:
    local = render("overlays/local")
    for sts in find(local, "StatefulSet"):
        assert sts["spec"]["replicas"] == 1
        limits = container(sts)["resources"]["limits"]
        assert limits["memory"] in {"256Mi", "1Gi"}
    assert {o["metadata"].get("namespace") for o in local if o["kind"] != "Namespace"} == {
        "vigil-local"
    }
    _, run = run_settings(local, tmp_path)
    assert run.max_keys < ServiceSettings.model_fields["max_keys"].default
