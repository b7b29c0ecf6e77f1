"""The playground: a local web page to steer gradient descent and watch it learn (``gradfit serve``).

``create_app()`` is the ASGI app (Starlette); ``serve()`` runs it with uvicorn.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from ..errors import OptionError
from .app import create_app
from .setup import Limits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_address(host: str, port: int) -> None:
    """Refuse, in one line, an address this machine cannot listen on (taken, or not its own)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except socket.gaierror:
            raise OptionError(f"--host {host!r} is not an address of this machine. Use 127.0.0.1.") from None
        except OSError as e:
            what = "is already in use" if e.errno in (98, 48) else f"cannot be used ({e.strerror})"
            raise OptionError(f"Port {port} on {host} {what}. Choose another with --port.") from None


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    open_browser: bool = False,
    limits: Limits | None = None,
    announce=print,
) -> None:
    """Run the playground until Ctrl-C. Binds only this machine (127.0.0.1) unless ``host`` says otherwise."""
    import torch
    import uvicorn

    check_address(host, port)
    allowed = None
    if not is_loopback(host):
        print(
            "\n".join(
                [
                    "!" * 78,
                    f"WARNING: serving the playground on {host}: other machines on your network can reach it.",
                    "It has no login: anyone who can connect can start fits on this machine.",
                    "Use the default --host 127.0.0.1 unless you mean this.",
                    "!" * 78,
                ]
            ),
            file=sys.stderr,
        )
        allowed = ["*"]  # the user asked for other machines: accept whatever name they use for this one
    torch.set_num_threads(1)  # many small fits side by side: one thread each beats all threads for each
    warm_up()
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
    announce(f"gradfit playground on {url}  (Ctrl-C stops it)")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    uvicorn.run(
        create_app(limits, allowed_hosts=allowed),
        host=host.strip("[]"),
        port=port,
        log_level="warning",
        **SERVER_LIMITS,
    )


def warm_up() -> None:
    """One small nonlinear session, made and dropped before the server listens: the first fit by autograd's
    Jacobians imports torch.func's machinery (torch._dynamo and more: ~90 MB, once per process). Loaded at
    start, the server's memory at start is its memory at rest, and what sessions take comes back when they
    go (tests/test_web_hardening.py); the first visitor does not wait for the imports either."""
    import numpy as np

    from .sessions import Session, Setup

    x = np.linspace(-3.0, 3.0, 15)
    Session(Setup(model="gaussian", method="lm"), x, np.exp(-(x**2)), Limits()).step(3)


# uvicorn's own limits: connections and requests at once (past it, 503 at once), an idle kept-alive
# connection's life, a request head's size, and how long Ctrl-C waits for requests in flight
SERVER_LIMITS = {
    "limit_concurrency": 200,
    "timeout_keep_alive": 5,
    "h11_max_incomplete_event_size": 64 * 1024,
    "timeout_graceful_shutdown": 3,
}


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "SERVER_LIMITS", "Limits", "create_app", "serve"]
