"""Child-process side of the fault tests: SIGKILL this process right after a chosen write began.

``VITRINA_KILL_AT="<glob>:<n>"`` kills the process (``SIGKILL``, as ``kill -9``: no
``finally``, no ``atexit``, no flush) right after the ``n``-th opening for writing of a
file whose name matches ``glob``, once that opening has created or truncated the file.
A temporary name ``.<name>.tmp-...`` counts as ``<name>``, so the kill lands inside the
save whether the writer writes in place (the file is then truncated, as a real kill would
leave it) or through a temporary file. The openings are seen through Python's audit hook
(``open`` events); the moment after the system call is found with a profile function.
This is deterministic, which a kill sent from outside at a random time is not.

Run a command under it: ``python -m tests.faults.inject kedro run --pipelines=...`` (or
``python -m tests.faults.inject python -c CODE``).
"""

from __future__ import annotations

import fnmatch
import os
import re
import signal
import sys
import threading

_TMP = re.compile(r"^\.(?P<name>.+?)\.tmp-")


def _target_name(path: object) -> str | None:
    try:
        name = os.path.basename(os.fsdecode(path))  # type: ignore[arg-type]
    except TypeError:  # a file descriptor
        return None
    match = _TMP.match(name)
    return match["name"] if match else name


def _is_write(mode: object, flags: object) -> bool:
    if isinstance(mode, str):
        return any(m in mode for m in "wxa+")
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))


def _state(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def install(glob: str, nth: int = 1) -> None:
    """Arm the kill: see the module docstring."""
    count = 0
    lock = threading.Lock()

    def kill() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def audit(event: str, args: tuple) -> None:
        nonlocal count
        if event != "open" or not args:
            return
        path, mode, flags = (list(args) + [None, None])[:3]
        name = _target_name(path)
        if name is None or not _is_write(mode, flags) or not fnmatch.fnmatch(name, glob):
            return
        with lock:
            count += 1
            if count != nth:
                return
        path = os.fsdecode(path)
        before = _state(path)
        hook_frame = sys._getframe(0)
        caller = sys._getframe(1)

        def profile(frame, event, arg):  # noqa: ARG001 - the profile function signature
            if frame is hook_frame:
                return
            opened = _state(path)
            if (opened is not None and opened != before) or (
                frame is caller and event == "c_return"
            ):
                kill()

        sys.setprofile(profile)

    sys.addaudithook(audit)


def main() -> None:
    spec = os.environ.get("VITRINA_KILL_AT")
    if spec:
        glob, _, nth = spec.rpartition(":")
        install(glob, int(nth))
    program, *args = sys.argv[1:]
    if program == "kedro":
        from kedro.framework.cli import main as kedro_main

        sys.argv = [os.path.join(os.path.dirname(sys.executable), "kedro"), *args]
        kedro_main()
    elif program == "python" and args[:1] == ["-c"]:
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<fault-test>", "exec"), {"__name__": "__main__"})
    else:
        raise SystemExit(f"usage: python -m tests.faults.inject kedro|python -c ...; got {program}")


if __name__ == "__main__":
    main()
