"""Fetch a recording over SFTP from a configured recording server (paramiko).

Key authentication only, the server's host key must already be in the configured known_hosts file (unknown or
changed keys are refused), and paths are confined to the server's ``base_dir``.
"""

from __future__ import annotations

import posixpath
import stat
import time
from pathlib import Path

from callqa.config import FetchSettings, SftpServer
from callqa.errors import FetchError, InputError, LimitError
from callqa.sources import copy_limited, safe_name


def resolve(ref: str, servers: list[SftpServer]) -> tuple[SftpServer, str]:
    """``name:/path`` (or ``/path`` when one server is configured) -> (server, absolute path under base_dir)."""
    if not servers:
        raise FetchError("no SFTP recording server is configured")
    name, sep, path = ref.partition(":")
    if not sep:
        if len(servers) != 1:
            raise InputError("several SFTP servers are configured: write the path as NAME:/path")
        server, path = servers[0], ref
    else:
        matches = [s for s in servers if s.label == name]
        if not matches:
            raise FetchError(f"{name!r} is not a configured SFTP recording server")
        server = matches[0]
    if "\x00" in path or not path:
        raise InputError(f"not a valid SFTP path: {ref!r}")
    base = posixpath.normpath(server.base_dir)
    full = posixpath.normpath(posixpath.join(base, path))  # an absolute path replaces base, then is checked
    if not (full == base or full.startswith(base.rstrip("/") + "/")):
        raise FetchError(f"{path!r} is outside the server's recording directory {base}")
    return server, full


def fetch_sftp(ref: str, fetch: FetchSettings, dest_dir: Path) -> Path:
    import paramiko

    server, path = resolve(ref, fetch.sftp_servers)
    if server.key_file.exists() and server.key_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise FetchError(f"SFTP key {server.key_file} is readable by others: chmod 600 it")
    deadline = time.monotonic() + fetch.timeout_s
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(str(server.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        connect_timeout = min(fetch.timeout_s, 15.0)
        client.connect(server.host, port=server.port, username=server.user, key_filename=str(server.key_file),
                       timeout=connect_timeout, banner_timeout=connect_timeout, auth_timeout=connect_timeout,
                       allow_agent=False, look_for_keys=False)  # fmt: skip
        sftp = client.open_sftp()
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(connect_timeout)
        size = sftp.stat(path).st_size or 0
        if size > fetch.max_bytes:
            raise LimitError(f"{server.label}:{path} is {size} bytes, more than the limit of {fetch.max_bytes}")
        dest = dest_dir / safe_name(posixpath.basename(path))
        with sftp.open(path, "rb") as remote, open(dest, "wb") as local:
            remote.prefetch(size)
            blocks = iter(lambda: remote.read(1 << 16), b"")
            copy_limited(blocks, local, f"{server.label}:{path}", fetch.max_bytes, deadline, fetch.timeout_s)
        return dest
    except FileNotFoundError as exc:
        raise FetchError(f"{server.label}:{path} does not exist") from exc
    except PermissionError as exc:
        raise FetchError(f"{server.label}:{path} is not readable by {server.user}") from exc
    except paramiko.BadHostKeyException as exc:
        raise FetchError(f"{server.label}: the host key changed; refusing to connect") from exc
    except paramiko.SSHException as exc:  # includes an unknown host key and failed authentication
        raise FetchError(f"SFTP to {server.label} failed: {exc}") from exc
    except (TimeoutError, OSError, EOFError) as exc:
        raise FetchError(f"cannot reach SFTP server {server.label} ({server.host}:{server.port}): {exc}") from exc
    finally:
        client.close()
