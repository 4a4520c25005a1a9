"""Launch real DeepSpeed work as subprocesses: training under torchrun, and DeepSpeed's own converters.

`zero_to_fp32` and `ds_to_universal` are run exactly as a user would run them: they are the reference
our own converters are compared with. Every launch writes its combined output to a log file; a failure
raises :class:`CkptError` naming that log and the line of it that explains the failure.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ckpt_tui.core.errors import CkptError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds `ckpt_tui/`
EXTENSIONS_ENV = "CKPT_TUI_TORCH_EXTENSIONS"
_ERROR_LINE = re.compile(r"^\s*([\w.]+(Error|Exception|Exit|Interrupt)\b.*|.*\berror:.*)$")
_NOISE = re.compile(
    r"^\s*(\[(?!.*\[ERROR\])|[WEI]\d{4} \d\d:|\$ |=+$|-+$|File \"|warnings\.warn|DeepSpeed .* built successfully)"
)
_LAUNCHER_FAILED = "ChildFailedError"  # torchrun's own traceback after a worker failed: says nothing


def _strip_launcher_tail(text: str) -> str:
    """Drop torchrun's report of a failed worker; the worker's own message comes before it."""
    at = text.rfind(_LAUNCHER_FAILED)
    if at < 0:
        return text
    start = text.rfind("Traceback (most recent call last):", 0, at)
    return text[:start] if start >= 0 else text[:at]


def torch_extensions_dir() -> Path:
    """Where DeepSpeed's C++ ops (deepspeed_shm_comm) are compiled: once per machine, not per run."""
    default = Path.home() / ".cache" / "ckpt-tui" / "torch_extensions"
    return Path(os.environ.get(EXTENSIONS_ENV, default))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for every launch: importable package, one thread per rank, cached ops."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    env["TORCH_EXTENSIONS_DIR"] = str(torch_extensions_dir())
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def last_meaningful_line(text: str) -> str:
    """The line that explains a failure: the last exception line (with the message that follows it
    when Python printed that on the next lines), else the last line that is not launcher noise."""
    lines = [line.strip() for line in _strip_launcher_tail(text).splitlines() if line.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if _ERROR_LINE.match(lines[i]) and not _NOISE.match(lines[i]):
            message = lines[i]
            for follow in lines[i + 1 : i + 4]:  # "RuntimeError:" then the message on its own lines
                if len(message) > 120 or _NOISE.match(follow) or _ERROR_LINE.match(follow):
                    break
                message += " " + follow
            return message[:300]
    for line in reversed(lines):
        if not _NOISE.match(line):
            return line[:300]
    return "(empty log)"


def run_logged(cmd: Sequence[str], *, log_path: Path, what: str, env: dict[str, str] | None = None,
               timeout: float = 600, cwd: Path | None = None) -> None:
    """Run `cmd` with stdout+stderr into `log_path`; raise CkptError(log_path, ...) unless it exits 0."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(str(c) for c in cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(
            [str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=subprocess_env(env), cwd=cwd, start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise _failure(log_path, f"{what} timed out after {timeout:.0f} s") from None
        except BaseException:  # Ctrl-C in the caller: leave no ranks behind
            _kill_group(proc)
            raise
    if code != 0:
        raise _failure(log_path, f"{what} failed (exit code {code})")


def _kill_group(proc: subprocess.Popen) -> None:
    """End the launch and the workers it started (they share its new session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _failure(log_path: Path, reason: str) -> CkptError:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return CkptError(log_path, f"{reason}: {last_meaningful_line(text)}")


def run_training(nproc: int, train_args: list[str], *, log_path: Path, env: dict | None = None,
                 timeout: float = 600) -> None:
    """Train with `nproc` ranks via torchrun: ``python -m ckpt_tui.demo.train *train_args``.

    The free port is probed, then bound by torchrun a moment later; if another process took it in
    between, the launch is retried once on a new port.
    """
    for attempt in range(2):
        port = free_port()
        cmd = [
            sys.executable, "-m", "torch.distributed.run",
            "--nnodes", "1", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(port),
            "-m", "ckpt_tui.demo.train", *train_args,
        ]
        extra = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), **(env or {})}
        try:
            run_logged(cmd, log_path=log_path, what=f"training ({nproc} ranks)", env=extra, timeout=timeout)
            return
        except CkptError:
            if attempt or not _port_taken(log_path):
                raise


def _port_taken(log_path: Path) -> bool:
    text = log_path.read_text(errors="replace").lower() if log_path.exists() else ""
    return "address already in use" in text or "eaddrinuse" in text


def run_zero_to_fp32(save_dir: Path, out_dir: Path, *, tag: str | None = None, safe: bool = True,
                     max_shard_size: str | None = None, log_path: Path | None = None,
                     timeout: float = 600) -> None:
    """DeepSpeed's zero_to_fp32: a ZeRO save folder -> HF-style fp32 weights (safetensors or .bin)."""
    script = Path(save_dir) / "zero_to_fp32.py"  # the copy DeepSpeed leaves next to every save
    runner = [str(script)] if script.is_file() else ["-m", "deepspeed.utils.zero_to_fp32"]
    cmd = [sys.executable, *runner, str(save_dir), str(out_dir)]
    if safe:
        cmd.append("--safe_serialization")
    if max_shard_size:
        cmd += ["--max_shard_size", max_shard_size]
    if tag:
        cmd += ["--tag", tag]
    log = log_path or out_dir.with_name(out_dir.name + ".log")
    run_logged(cmd, log_path=log, what="zero_to_fp32", timeout=timeout)


def run_ds_to_universal(step_dir: Path, out_dir: Path, *, inject_missing_state: bool,
                        log_path: Path | None = None, timeout: float = 600) -> None:
    """DeepSpeed's ds_to_universal: one ZeRO tag folder -> a universal folder.

    It also writes ``latest_universal`` next to `out_dir` (naming `out_dir`), as DeepSpeed does.
    """
    cmd = [
        sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal",
        "--input_folder", str(step_dir), "--output_folder", str(out_dir),
        "--num_extract_workers", "2", "--num_merge_workers", "1",
    ]
    if inject_missing_state:
        cmd.append("--inject_missing_state")
    log = log_path or out_dir.with_name(out_dir.name + ".log")
    run_logged(cmd, log_path=log, what="ds_to_universal", timeout=timeout)
